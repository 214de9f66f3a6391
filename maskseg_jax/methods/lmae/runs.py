"""Trained L-MAE runs for completion: a workdir's config and checkpoint -> a `Completer`, model specs and
the one-model-per-ratio rule.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from maskseg_jax import checkpointing, optim, weight_average
from maskseg_jax.errors import CheckpointError, ConfigError
from maskseg_jax.methods import base
from maskseg_jax.methods.lmae.completion import Completer, make_completer
from maskseg_jax.methods.lmae.config import LMAE_DEFAULTS
from maskseg_jax.methods.lmae.model import build_lmae


# --- loading trained runs -----------------------------------------------------------------------------------
# Fields of a run's config.json completion reads (besides what build_lmae and the optimizer read).
RUN_FIELDS = ("seed", "data.num_classes", "data.ignore_label", "data.mean", "data.std", "model.patch_size",
              "model.image_size", "optim", "train.steps", "lmae.mask_ratio", "lmae.background_classes")


def _lookup(tree, dotted: str):
  node = tree
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      raise KeyError(dotted)
    node = node[part]
  return node


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, or a ConfigError naming config.json and what is wrong with it."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path} not found; expected the workdir of an L-MAE training run "
                          "(python -m maskseg_jax.main --config=configs/lmae_*.py --workdir=...)")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    data = json.loads(text)
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path} could not be read ({e}); expected the JSON config its training run wrote") from None
  except json.JSONDecodeError as e:
    cut = "" if text.rstrip().endswith("}") else " (empty or cut short: was its training start interrupted?)"
    raise ConfigError(f"{path} is not valid JSON ({e}){cut}; expected the config its training run wrote "
                      "(restore it, or start the run again)") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path} holds a JSON {type(data).__name__}; expected an object (the run's config)")
  if data.get("method") != "lmae":
    raise ConfigError(f"{path} is a {data.get('method')!r} run; completion needs an 'lmae' run")
  for field in RUN_FIELDS:
    try:
      _lookup(data, field)
    except KeyError:
      raise ConfigError(f"{path} lacks {field}; expected the full config an L-MAE training run writes") from None
  return ml_collections.ConfigDict(data)


def best_step(workdir: str, metric: str, available: Sequence[int]) -> int | None:
  """The saved step with the highest `metric` in `metrics.jsonl` (None if no eval of a saved step)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  scores = {}
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by an interrupted run
      if row.get("split") == "eval" and metric in row and row["step"] in available:
        scores[row["step"]] = row[metric]
  return max(scores, key=scores.get) if scores else None


def override_eval_settings(config: ml_collections.ConfigDict, overrides: dict | None) -> ml_collections.ConfigDict:
  """The run's config with evaluation-time `lmae.*` settings replaced (e.g. `lmae.progressive_reveal`): the
  weights are the run's, only how they complete changes. Other fields are refused (they change the model). A
  field newer than the run (in `LMAE_DEFAULTS`, not in its saved config) is accepted too."""
  for key, value in (overrides or {}).items():
    section, _, name = key.partition(".")
    known = name in config.lmae or name in LMAE_DEFAULTS
    if section != "lmae" or not known or name.startswith("complete_"):
      raise ConfigError(f"run setting {key}={value!r}: expected an evaluation-time lmae.* field of the run's "
                        "config (e.g. lmae.progressive_reveal, lmae.fill_blend, lmae.mirror_average)")
    config.lmae[name] = value
  return config


def load_completer(workdir: str, *, ratio: float | None = None, checkpoint: str = "latest",
                   log: Callable[[str], None] = print, overrides: dict | None = None) -> Completer:
  """Rebuilds the model from `<workdir>/config.json` (via build_lmae) and restores its latest or best step;
  `overrides`: evaluation-time settings that replace the run's (`override_eval_settings`)."""
  if checkpoint not in ("latest", "best"):
    raise ConfigError(f"checkpoint={checkpoint!r}; expected 'latest' or 'best'")
  config = override_eval_settings(read_run_config(workdir), overrides)
  n = int(config.data.num_classes)
  mdef, params, batch_stats = base.split_model(
      build_lmae(config.model, n, nnx.Rngs(params=config.seed, dropout=config.seed + 1)))
  tx = optim.make_optimizer(config.optim, config.train.steps, params)
  # The optimizer state is only described (never allocated): restoring needs the saved tree's structure.
  shapes = jax.eval_shape(lambda p: weight_average.attach(
      base.new_state(p, batch_stats, tx, {"class_weights": jnp.zeros(n)}), config.train.get("ema_decay", 0.0)), params)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    step = ckpt.latest_step()
    if checkpoint == "best" and step is not None:
      step = best_step(workdir, config.train.best_metric, ckpt.all_steps()) or step
    restored, _ = ckpt.restore(abstract, step=step)
  finally:
    ckpt.close()
  restored = weight_average.for_inference(restored)
  c = make_completer(config, mdef, restored["params"], restored["batch_stats"], name=workdir, ratio=ratio)
  if abs(c.ratio - c.train_ratio) > 1e-9:
    log(f"warning: --model={c.ratio:g}={workdir}: this run was trained at mask ratio {c.train_ratio:g}, not "
        f"{c.ratio:g}; it is routed as {c.ratio:g}")
  return c


def parse_model_spec(spec) -> tuple[float | None, str]:
  """'WORKDIR' or 'RATIO=WORKDIR' (or a (ratio, workdir) pair) -> (ratio or None, workdir); ratio in (0, 1)."""
  if isinstance(spec, (tuple, list)):
    ratio, workdir = (None if spec[0] is None else float(spec[0])), str(spec[1])
  else:
    head, sep, tail = str(spec).partition("=")
    ratio, workdir = None, str(spec)
    if sep:
      try:
        ratio, workdir = float(head), tail
      except ValueError:
        pass
  if ratio is not None and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
    raise ConfigError(f"--model={spec if isinstance(spec, str) else f'{spec[0]}={spec[1]}'}: mask ratio "
                      f"{ratio:g} is out of range; expected a number in (0, 1), e.g. --model=0.5={workdir}")
  if not workdir:
    raise ConfigError(f"--model={spec}: no run folder; expected RUN or RATIO=RUN")
  return ratio, workdir


def check_ratios(completers: Sequence[Completer]) -> None:
  """Refuses two models routed at one ratio (which would win is arbitrary)."""
  seen: dict[float, str] = {}
  for c in completers:
    key = round(c.ratio, 9)
    if key in seen:
      raise ConfigError(f"two models at mask ratio {c.ratio:g} ({seen[key]} and {c.name}); expected one model "
                        "per ratio (route one as another ratio with --model=RATIO=RUN, or drop it)")
    seen[key] = c.name


def resolve_models(models: Sequence, checkpoint: str, log: Callable[[str], None],
                   overrides: dict | None = None) -> list[Completer]:
  """Completers from Completers or 'WORKDIR' / 'RATIO=WORKDIR' / (ratio, workdir) specs; one per ratio."""
  specs = [m if isinstance(m, Completer) else parse_model_spec(m) for m in models]  # validate all first
  completers = [m if isinstance(m, Completer) else load_completer(m[1], ratio=m[0], checkpoint=checkpoint, log=log,
                                                                   overrides=overrides)
                for m in specs]
  check_ratios(completers)
  return completers
