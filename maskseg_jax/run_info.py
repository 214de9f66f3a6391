"""The few lines a run prints when it starts: what it runs, on which data and model, for how long, the values
the command line changed, and where everything is written."""

from __future__ import annotations

from typing import Sequence

# Per method: the fields of its own section worth a glance at start (the rest is in workdir/config.json).
METHOD_FIELDS = {
    "lmae": ("lmae.mask_ratio", "lmae.train_mask_ratios"),
    "semi_supervised": ("semi.variant", "semi.labeled_fraction"),
    "selective_masking": ("selective.strategy", "selective.num_partitions", "selective.steps_per_stage"),
}
# Per model: the fields that say its size (others: backbone and width).
MODEL_FIELDS = {"lmae": ("size", "patch_size", "image_size")}
SEGMENTER_FIELDS = ("backbone", "width")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def _fmt(value) -> str:
  if isinstance(value, (tuple, list)):
    return "x".join(str(v) for v in value) if value else "()"
  return f"{value:g}" if isinstance(value, float) else str(value)


def describe(config, workdir: str, overrides: Sequence[str] = ()) -> list[str]:
  """-> lines such as
  `run: lmae, mode train | data synthetic (6 classes) | model lmae tiny patch_size 8 image_size 64x64 |
  600 steps, batch 16, adam lr 0.001, seed 0` (one line), `lmae: mask_ratio 0.5`,
  `overrides: --config.train.steps=3` and `workdir: runs/...`."""
  d, m, o = config.data, config.model, config.optim
  fields = MODEL_FIELDS.get(m.name, SEGMENTER_FIELDS)
  model = " ".join([m.name] + [f"{k} {_fmt(m[k])}" if k != "size" else str(m[k])
                               for k in fields if k in m and m[k] not in ("", None)])
  data = f"{d.name}{' ' + d.root if d.get('root', '') else ''} ({d.num_classes} classes)"
  steps = f"{config.train.steps} steps, " if config.train.steps else ""  # selective: set per stage
  steps += f"batch {d.batch_size}, {o.name} lr {_fmt(float(o.lr))}, seed {config.seed}"
  lines = [f"run: {config.method}, mode {config.mode} | data {data} | model {model} | {steps}"]
  own = [(k, _get(config, k)) for k in METHOD_FIELDS.get(config.method, ())]
  own = [(k, v) for k, v in own if v not in (None, (), [])]
  if own:
    section = own[0][0].split(".")[0]
    lines.append(f"{section}: " + ", ".join(f"{k.split('.', 1)[1]} {_fmt(v)}" for k, v in own))
  lines.append("overrides: " + (" ".join(overrides) if overrides else "none (the config file's values)"))
  lines.append(f"workdir: {workdir} (config.json, metrics.jsonl, checkpoints/, images/)")
  return lines


def command_line_overrides(argv: Sequence[str]) -> list[str]:
  """The `--config.a.b=v` arguments of a command line, as given."""
  return [a for a in argv if a.startswith("--config.")]
