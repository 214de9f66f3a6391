"""Command-line entry point.

  maskseg --config=<name>.py[:arg] [--workdir=DIR] [--config.train.steps=N ...]   (= python -m maskseg_jax.main)
  maskseg --list_configs                                                           (the packaged configs, their args)

`--config` is a config file's path or the name of a packaged config (`maskseg_jax/configs/`: lmae.py, semi.py,
selective.py, supervised.py, lmae_voc.py), so it works from any folder; in a checkout `configs/<name>.py` too.

`config.mode` picks train (default), eval or predict (and method modes such as `complete` for L-MAE); a
segmenter's predict writes label maps of the val split, or of your own images with
`--config.predict.images=DIR` (`maskseg_jax/methods/predict_folder.py`). A run prints what it runs (method, data,
model, steps, the command line's overrides) and its workdir first.
Without --workdir a fresh folder `runs/<config name>[_<arg>]_<timestamp>` is made; the resolved config is
saved there as config.json, and rerunning with the same --workdir resumes from its latest checkpoint (a run
folder is only resumed by a config of the same method and model shapes).
Multi-host: set --coordinator_address/--num_processes/--process_id (or let `jax.distributed.initialize`
discover them on Cloud TPU) before anything touches devices.

Bad input of any kind (flags, config files, data, checkpoints) ends with one line `error: ...` on stderr and
exit code 2; `--debug` (or MASKSEG_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from maskseg_jax import configs
from maskseg_jax.errors import ConfigError, MasksegError

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file's path or a packaged config's name "
                                          "(lmae.py, semi.py, ...), then [:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config>_<time>); reused to resume.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process on CPU/GPU).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "This process's id.")
flags.DEFINE_bool("debug", False, "Show tracebacks of errors (also: environment MASKSEG_DEBUG=1).")
_LIST = flags.DEFINE_bool("list_configs", False, "Print the packaged configs (path, documented args) and exit.")

EXAMPLE = "e.g. --config=supervised.py (--list_configs shows them all)"
_ARGV: list[str] = []  # the command line as given, for naming the flag at fault


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0] + (f"_{arg.replace(',', '_')}" if arg else "")
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
  from maskseg_jax import config_checks
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    config_checks.write_config(config, workdir)


def print_start(config, workdir: str) -> None:
  """The run's short description (method, data, model, steps, overrides, workdir), process 0 only."""
  import jax
  from maskseg_jax import run_info
  if jax.process_index() == 0:
    print("\n".join(run_info.describe(config, workdir, run_info.command_line_overrides(_ARGV or sys.argv))),
          flush=True)


# ----------------------------------------------------------------------------------- one-line error messages

def _config_arg(argv) -> str:
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")


def _override_of(argv, key: str) -> str:
  """The `--config.a.b=v` argument whose path holds the unknown `key`."""
  for a in argv:
    if a.startswith("--config.") and key in a.split("=", 1)[0].split(".")[1:]:
      return a
  return f"--config...{key}"


def _unknown_key(e: Exception, argv) -> str:
  """ml_collections' KeyError/AttributeError text "'stepz'\\nDid you mean "steps" instead of "stepz"?"."""
  inner = e
  while isinstance(inner, BaseException) and inner.args:  # AttributeError(KeyError(message))
    inner = inner.args[0]
  text = str(inner)
  key = text.split("\n", 1)[0].strip("'\"")
  hint = re.search(r'Did you mean "([^"]+)"', text)
  fix = f"; did you mean {hint.group(1)!r}?" if hint else "; see the config file for the known keys"
  return f"{_override_of(argv, key)}: unknown config key {key!r}{fix}"


def _syntax_error(e: SyntaxError, argv) -> str:
  return f"config file {e.filename} has a syntax error at line {e.lineno}: {e.msg}"


def _flag_error(e: flags.Error, argv) -> str:
  text = str(e)
  if "Error whilst parsing config file" in text:  # get_config raised: its last traceback line is the cause
    lines = [line for line in text.splitlines() if line.strip()]
    return (f"--config={_config_arg(argv)}: the config's get_config raised {lines[-1].strip()} (check the "
            "argument after ':' and the config file)")
  unknown = re.match(r"Unknown command line flag '([^']+)'", text)
  if unknown:
    return f"unknown flag --{unknown.group(1)}; run with --helpshort for the flags"
  return text.splitlines()[0]


def _os_error(e: OSError, argv) -> str:
  text = str(e)
  if "Failed loading config file" in text or "earlier failure to load" in text:
    return f"config file {_config_arg(argv) or '?'} not found or unreadable; expected a config file's path or a packaged config's name, {EXAMPLE}"
  return f"{e.filename or ''} {e.strerror or text.splitlines()[0]}".strip()


# Failures of flag parsing and config loading, by type: each gets one line naming the value and the fix.
_FORMATTERS = [(SyntaxError, _syntax_error), (flags.Error, _flag_error), (KeyError, _unknown_key),
               (AttributeError, _unknown_key), (OSError, _os_error)]


def _parse_flags(argv):
  """absl's flag parsing (which loads the config file), with its failures turned into ConfigError."""
  try:
    return flags.FLAGS(argv)
  except tuple(t for t, _ in _FORMATTERS) as e:
    fmt = next(f for t, f in _FORMATTERS if isinstance(e, t))
    raise ConfigError(fmt(e, argv)) from e


def loaded_config(argv):
  """The --config value, or a ConfigError saying why there is none (missing flag or file, None returned)."""
  flag = flags.FLAGS["config"]
  if not flag.present:
    raise ConfigError(f"--config is required, {EXAMPLE}")
  try:
    config = _CONFIG.value
    usable = config is not None and hasattr(config, "to_json_best_effort")  # a failed load raises here
  except OSError as e:
    raise ConfigError(_os_error(e, argv)) from e
  if not usable:
    raise ConfigError(f"--config={_config_arg(argv)}: get_config() returned {type(config).__name__}; expected "
                      "an ml_collections.ConfigDict (a missing `return`?)")
  return config


def main(argv) -> None:
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; config values are set as --config.<section>.<key>=value")
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; -v 0 brings it back
    logging.set_verbosity(logging.WARNING)
  if _LIST.value:
    print(configs.listing())
    return
  config = loaded_config(_ARGV or sys.argv)
  init_distributed()
  from maskseg_jax import config_checks, train
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS["config"]))
  config_checks.check_workdir(workdir)  # before anything is written or built
  config_checks.check_run_folder(config, workdir)  # before config.json of an existing run is replaced
  save_config(config, workdir)
  print_start(config, workdir)
  result = train.run(config, workdir)
  if result:
    from maskseg_jax.metric_writer import headline_order
    headline = {k: round(result[k], 4) for k in headline_order(result) if k.count("/") == 1}
    print(json.dumps({"workdir": workdir, **headline}))


def debugging(argv) -> bool:
  return os.environ.get("MASKSEG_DEBUG", "") not in ("", "0") or any(
      a in ("--debug", "--debug=true", "--debug=True", "--debug=1") for a in argv)


def resolved_argv(argv) -> list[str]:
  """`--config=NAME[:arg]` (or `--config NAME`) with a packaged config's name turned into its path."""
  out = []
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      a = "--config=" + configs.resolve(a[len("--config="):])
    elif i > 0 and argv[i - 1] == "--config":
      a = configs.resolve(a)
    out.append("--list_configs" if a == "--list-configs" else a)
  return out


def run_main(argv=None) -> None:
  """Console script `maskseg`: one line `error: ...` and exit code 2 for bad input instead of a traceback."""
  argv = resolved_argv(sys.argv if argv is None else argv)
  _ARGV[:] = argv
  try:
    app.run(main, argv=argv, flags_parser=_parse_flags)
  except MasksegError as e:
    if debugging(argv):
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    if debugging(argv):
      raise
    print("error: interrupted (Ctrl-C); nothing was saved since the last checkpoint; rerun the same command to "
          "resume from it", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  run_main()
