"""Checks that a config does not contradict itself or the machine, run before anything is built.

A bad value found here costs a second; found later it costs a model build, a compile and sometimes hours
(a NaN from `std=0`, an ignore id that is also a class id). Each check is a small function in `CHECKS`
that raises `ConfigError` naming the value, what it contradicts and the fix; `check_config` runs them all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import jax

from maskseg_jax import weight_average
from maskseg_jax.errors import ConfigError


def _pair(config, key: str) -> tuple:
  section, name = key.split(".")
  value = config[section][name]
  try:
    pair = tuple(value)
  except TypeError:
    pair = (value,)
  return pair


def check_batch_sizes(config) -> None:
  """Global batches split evenly over every device (and so over processes)."""
  n = jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    value = int(config.data[key])
    if value < 1 or value % n:
      raise ConfigError(f"data.{key}={value} must be a positive multiple of the number of devices ({n}); "
                        f"use e.g. --config.data.{key}={max(n, value - value % n or n)}")


def check_sizes(config) -> None:
  """Crop, eval and sliding-window sizes are (h, w) pairs of positive ints; windows fit the eval size."""
  for key in ("data.crop_size", "data.eval_size", "data.eval_window", "data.eval_stride"):
    pair = _pair(config, key)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
      raise ConfigError(f"{key}={pair!r}; expected two positive integers (height, width)")
  if config.data.eval_mode not in ("whole", "sliding"):
    raise ConfigError(f"data.eval_mode={config.data.eval_mode!r}; expected 'whole' or 'sliding'")


def check_classes(config) -> None:
  """At least two classes; the ignore id fits uint8 labels and is not itself a class id."""
  n, ignore = int(config.data.num_classes), int(config.data.ignore_label)
  if n < 2:
    raise ConfigError(f"data.num_classes={n}; expected at least 2")
  if not 0 <= ignore <= 255:
    raise ConfigError(f"data.ignore_label={ignore} must fit in uint8 labels (0..255)")
  if ignore < n:
    raise ConfigError(f"data.ignore_label={ignore} is also a class id (data.num_classes={n}, ids 0..{n - 1}); "
                      "pixels of that class would be ignored. Use 255")
  if n > 255:
    raise ConfigError(f"data.num_classes={n}; uint8 labels hold at most 255 classes plus the ignore id")


def check_normalization(config) -> None:
  """Three channel means and positive stds: a zero std turns every image into inf/NaN."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  if len(mean) != 3 or len(std) != 3:
    raise ConfigError(f"data.mean={mean} and data.std={std}; expected three (RGB) values each")
  if not all(math.isfinite(s) and s > 0 for s in std):
    raise ConfigError(f"data.std={std}; expected positive values (a zero std divides images by zero)")


def check_augmentation(config) -> None:
  lo, hi = (float(v) for v in config.data.scale_range)
  if not 0 < lo <= hi:
    raise ConfigError(f"data.scale_range=({lo}, {hi}); expected 0 < min <= max")


def check_dataset_name(config) -> None:
  from maskseg_jax.data.sources import SOURCES
  for key in ("name", "val_name"):
    name = config.data.get(key, "")
    if (name or key == "name") and name not in SOURCES:
      raise ConfigError(f"unknown data.{key} {name!r}; known: {sorted(SOURCES)}")


def check_schedule(config) -> None:
  """Positive step counts and intervals; stop_at inside the run; a known non-finite policy; an EMA decay in [0, 1)."""
  t = config.train
  for key in ("steps", "log_every", "checkpoint_every", "keep_checkpoints"):
    if int(t[key]) < 1:
      raise ConfigError(f"train.{key}={t[key]}; expected a positive integer")
  for key in ("eval_every", "image_every"):
    if int(t[key]) < 0:
      raise ConfigError(f"train.{key}={t[key]}; expected 0 (off) or a positive integer")
  if t.stop_at != -1 and not 1 <= int(t.stop_at) <= int(t.steps):
    raise ConfigError(f"train.stop_at={t.stop_at}; expected -1 (off) or a step in 1..train.steps={t.steps}")
  if t.on_nonfinite not in ("stop", "skip"):
    raise ConfigError(f"train.on_nonfinite={t.on_nonfinite!r}; expected 'stop' or 'skip'")
  weight_average.check_decay(t.get("ema_decay", 0.0))


def check_optimizer(config) -> None:
  lr = float(config.optim.lr)
  if not (math.isfinite(lr) and lr > 0):
    raise ConfigError(f"optim.lr={lr}; expected a positive finite learning rate")


CHECKS: list[Callable] = [check_dataset_name, check_batch_sizes, check_sizes, check_classes,
                          check_normalization, check_augmentation, check_schedule, check_optimizer]


def check_config(config) -> None:
  """Runs every check of `CHECKS`; the first contradiction raises ConfigError."""
  for check in CHECKS:
    check(config)


def _probe_writable(folder: str) -> None:
  """Makes and removes a file and a folder in `folder` (what a log line and an Orbax save need)."""
  probe = os.path.join(folder, f".write_test_{os.getpid()}")
  with open(probe, "w"):
    pass
  os.remove(probe)
  os.mkdir(probe)
  os.rmdir(probe)


def check_workdir(workdir: str) -> None:
  """The run folder and its checkpoints/ exist (or can be made) and take files, before hours are spent
  producing them: a read-only checkpoints/ found at the first save loses everything trained until then."""
  checkpoints = os.path.join(workdir, "checkpoints")
  try:
    os.makedirs(workdir, exist_ok=True)
    _probe_writable(workdir)
  except OSError as e:
    raise ConfigError(f"workdir {workdir} is not writable ({e.strerror or e}); choose a folder you can write to "
                      "with --workdir") from None
  if os.path.lexists(checkpoints) and not os.path.isdir(checkpoints):
    raise ConfigError(f"{checkpoints} is not a folder; move it away (the run saves its checkpoints there)")
  if os.path.isdir(checkpoints):
    try:
      _probe_writable(checkpoints)
    except OSError as e:
      raise ConfigError(f"checkpoint folder {checkpoints} is not writable ({e.strerror or e}); fix its "
                        "permissions (e.g. chmod u+w) or use another --workdir") from None


# Fields that fix the shapes of a run's state: a resume with other values cannot restore its checkpoints.
RUN_IDENTITY = ("method", "data.num_classes", "model")
RESUMABLE_MODEL_FIELDS = ("dtype", "dropout", "drop_path", "init_from")  # change freely between resumes


def _identity(tree: dict) -> dict[str, object]:
  """Flat {dotted key: value} of the RUN_IDENTITY fields of a config as JSON (tuples as lists)."""
  out = {}
  for key in RUN_IDENTITY:
    node = tree
    for part in key.split("."):
      node = node.get(part, "<missing>") if isinstance(node, dict) else "<missing>"
    if isinstance(node, dict):
      out.update({f"{key}.{k}": v for k, v in node.items() if k not in RESUMABLE_MODEL_FIELDS})
    else:
      out[key] = node
  return out


def identity_differences(saved: dict, config) -> list[str]:
  """'model.width: 0.125 in the run, 0.25 here' for every identity field that differs. Fields only one side
  has are skipped (a field added to the schema later must not lock older runs out)."""
  import json
  now = _identity(json.loads(config.to_json_best_effort()))
  before = _identity(saved)
  return [f"{k}: {before[k]!r} in the run, {now[k]!r} here" for k in sorted(set(now) & set(before))
          if before[k] != now[k] and "<missing>" not in (before[k], now[k])]


def has_checkpoints(workdir: str) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def check_run_folder(config, workdir: str) -> None:
  """A workdir that holds a trained run is resumed only by a config of the same method and shapes.

  Checked before `config.json` is rewritten, so a wrong --config (or none) never destroys the record that
  `maskseg-complete` and later resumes read. A folder without checkpoints has nothing to protect.
  """
  import json
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path) or not has_checkpoints(workdir):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict) or "method" not in saved:
      raise ValueError(f"a JSON {type(saved).__name__} without a 'method', not a maskseg config")
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} of this trained run is unreadable ({str(e).splitlines()[0]}), so this config "
                      "cannot be checked against the run; restore that file, or use a new --workdir") from None
  diffs = identity_differences(saved, config)
  if diffs:
    shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
    raise ConfigError(f"{workdir} holds a run of another method or model shape ({shown}); resume it with the "
                      f"config it was started with ({path}), or use a new --workdir")


def write_config(config, workdir: str) -> None:
  """Writes `config.json` atomically (temporary file, then rename): an interrupted start never leaves it
  empty or truncated."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(indent=1, sort_keys=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
