"""The config files, one per method family, shipped with the package so `--config=lmae.py:ARG` works from any folder.

`--config` takes a path to a config file or the name of one of these (`lmae.py`, `lmae`); an existing path wins.
In a checkout, `configs/<name>.py` are one-line files that re-export these.
"""

from __future__ import annotations

import os

DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """The packaged config files, e.g. ['lmae.py', 'lmae_voc.py', ...]."""
  return sorted(f for f in os.listdir(DIR) if f.endswith(".py") and not f.startswith("_"))


def resolve(config_arg: str) -> str:
  """`PATH[:arg]` unchanged when PATH is a file; a bare packaged name (`lmae.py`, `lmae`) -> its path here."""
  path, sep, arg = config_arg.partition(":")
  name = path if path.endswith(".py") else f"{path}.py"
  if os.path.isfile(path) or os.path.dirname(path) or name not in names():
    return config_arg  # a real file, or something config_flags will report as not found
  return os.path.join(DIR, name) + sep + arg


def listing() -> str:
  """One line per packaged config: its name, path and documented args (`ARGS`)."""
  import importlib
  lines = []
  for name in names():
    module = importlib.import_module(f"maskseg_jax.configs.{name[:-3]}")
    args = ", ".join(repr(a) for a in getattr(module, "ARGS", ("",)))
    lines.append(f"{name:<15} {os.path.join(DIR, name)}\n{'':<15} args: {args}")
  return "\n".join(lines)
