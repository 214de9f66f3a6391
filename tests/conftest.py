"""Every test runs on 8 fake CPU devices, so sharded code paths are exercised on a laptop."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after the flags above)

jax.config.update("jax_num_cpu_devices", 8)

# Tests build the same tiny models many times: a persistent compilation cache shares compiled programs
# across tests and test processes (first run fills it; CI starts empty and still gains within the suite).
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "maskseg_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
