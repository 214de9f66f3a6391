"""Command-line entry point.

  python -m maskseg_jax.main --config=configs/<name>.py[:arg] [--workdir=DIR] [--config.train.steps=N ...]

`config.mode` picks train (default), eval or predict (and method modes such as `complete` for L-MAE).
Without --workdir a fresh folder `runs/<config name>[_<arg>]_<timestamp>` is made; the resolved config is
saved there as config.json, and rerunning with the same --workdir resumes from its latest checkpoint.
Multi-host: set --coordinator_address/--num_processes/--process_id (or let `jax.distributed.initialize`
discover them on Cloud TPU) before anything touches devices.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from maskseg_jax.errors import MasksegError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config>_<time>); reused to resume.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process on CPU/GPU).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "This process's id.")


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0] + (f"_{arg}" if arg else "")
  return os.path.join("runs", f"{name}_{time.strftime('%Y%m%d_%H%M%S')}")


def init_distributed() -> None:
  import jax
  if _COORD.value or _DISTRIBUTED.value:
    if _COORD.value:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORD.value, num_processes=_NPROC.value,
                               process_id=_PID.value)


def save_config(config, workdir: str) -> None:
  import jax
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; -v 0 brings it back
    logging.set_verbosity(logging.WARNING)
  init_distributed()
  from maskseg_jax import train
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS["config"]))
  from maskseg_jax import config_checks
  config_checks.check_workdir(workdir)  # before anything is written or built
  save_config(config, workdir)
  result = train.run(config, workdir)
  if result:
    headline = {k: round(v, 4) for k, v in result.items() if k.count("/") == 1}
    print(json.dumps({"workdir": workdir, **headline}))


def run_main() -> None:
  """Console script `maskseg`: clear one-line errors for bad input instead of tracebacks."""
  try:
    app.run(main)
  except MasksegError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run_main()
