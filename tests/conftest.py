"""Every test runs on 8 fake CPU devices, so sharded code paths are exercised on a laptop."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after the flags above)

jax.config.update("jax_num_cpu_devices", 8)
