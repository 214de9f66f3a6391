"""L-MAE evaluation: PA-mIoU (masked-patch pixels only) and global mIoU (given + predicted vs truth).

One evaluator per mask strategy. The masking noise comes from a fixed key folded with the batch index, so
the same images get the same masks at every eval and numbers are comparable between steps and runs.

Every evaluation also scores the non-learned fills of `maskseg_jax/methods/lmae/fills.py` (`lmae.eval_baselines`) on exactly
the same masks, from the visible labels only, into confusion matrices accumulated the same way, and reports
`{name}/<fill>/pa_miou`, `.../miou` (+ per-class IoU) and `{name}/margin_pa_miou` / `margin_miou`: the model
minus the best fill. A learned completion that does not beat a two-line fill shows a negative margin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import metrics, sharding, visualize
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.base import EvalResult, tracked
from maskseg_jax.methods.lmae import fills
from maskseg_jax.methods.lmae import inference as inf
from maskseg_jax.methods.lmae import patch_masks as P


def renamed(scalars: dict, old: str, new: str) -> dict:
  """`summarize` keys `old/x` -> `new + x` (e.g. 'val/pa_' + 'miou')."""
  return {new + k[len(old) + 1:]: v for k, v in scalars.items()}


def fill_confusions(fill: str, label: np.ndarray, mask_px: np.ndarray, image: np.ndarray, valid: np.ndarray,
                    num_classes: int, ignore_label: int):
  """(PA confusion, global confusion, filled labels) of one fill on one batch.

  The fill sees the labels of visible, non-void pixels only: every masked label is overwritten with
  `ignore_label` before the fill is called, so it cannot leak into the completion.
  """
  known = ~mask_px & (label >= 0) & (label < num_classes)
  hidden = np.where(known, label, ignore_label)
  filled = fills.fill_batch(fill, hidden, known, image)
  composed = inf.compose(label, filled, mask_px)
  region = valid[:, None, None]
  conf_pa = metrics.confusion_matrix(filled, label, num_classes, ignore_label=ignore_label, region=mask_px & region)
  conf_all = metrics.confusion_matrix(composed, label, num_classes, ignore_label=ignore_label, region=region)
  return np.asarray(conf_pa, np.int64), np.asarray(conf_all, np.int64), composed


def margins(scalars: dict, name: str, baselines) -> dict:
  """`{name}/margin_pa_miou` and `margin_miou`: the model minus the best baseline, from the reported figures."""
  out = {}
  for key in ("pa_miou", "miou"):
    best = max((scalars[f"{name}/{b}/{key}"] for b in baselines), default=None)
    if best is not None:
      out[f"{name}/margin_{key}"] = scalars[f"{name}/{key}"] - best
  return out


def sum_over_processes(x: np.ndarray) -> np.ndarray:
  """Host-side confusions are per process; the model's are already global (replicated jit outputs)."""
  if jax.process_count() == 1:
    return x
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x)).sum(0)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in batch order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:  # replicas of the same rows (several devices per shard) appear once
    start = s.index[0].start or 0
    if start not in seen:
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


class LMAEEvaluator:
  """`{name}/pa_miou`, `{name}/miou` (+ pixel accuracy and per-class IoU of both) and a picture grid."""

  def __init__(self, *, name: str, strategy: str, source, data_config, mdef, mesh, model_config, lmae_config,
               num_classes: int, class_names=None, num_images: int = 4):
    from maskseg_jax.data import pipeline
    self.name, self.strategy, self.mesh = name, strategy, mesh
    self.num_classes, self.class_names, self.num_images = num_classes, class_names, num_images
    self.seed = int(lmae_config.eval_seed)
    self.baselines = tuple(lmae_config.get("eval_baselines", ()))
    unknown = [b for b in self.baselines if b not in fills.FILLS]
    if unknown:
      raise ConfigError(f"lmae.eval_baselines has {unknown}; expected names from {sorted(fills.FILLS)}")
    self.ignore_label = int(data_config.ignore_label)
    self._batches = lambda: pipeline.eval_batches(source, data_config, process_index=jax.process_index(),
                                                  process_count=jax.process_count())
    self.num_items = pipeline.eval_num_items(source, data_config)
    p, h, w, num_patches = inf.geometry(model_config)
    k = P.num_visible(num_patches, float(lmae_config.mask_ratio))
    bg = tuple(int(c) for c in lmae_config.background_classes)
    ignore = int(data_config.ignore_label)
    options = inf.completion_options(lmae_config)

    def step(state, batch, rng):
      label = batch["label"]
      ids_keep, ids_masked, mask = inf.strategy_mask(label, rng, strategy=strategy, k=k, p=p,
                                                     background_classes=bg, ignore_label=ignore)
      model = mdef.merge(state["params"], state["batch_stats"])
      logits = inf.completion_logits(model, batch["image"], label, ids_keep, ids_masked, **options)
      pred = jnp.argmax(logits, -1).astype(jnp.int32)
      mask_px = inf.patch_pixels(mask, p, h, w)
      valid = batch["valid"][:, None, None]
      conf_pa = metrics.confusion_matrix(pred, label, num_classes, ignore_label=ignore, region=mask_px & valid)
      composed = inf.compose(label, pred, mask_px)
      conf_all = metrics.confusion_matrix(composed, label, num_classes, ignore_label=ignore, region=valid)
      return conf_pa, conf_all, composed, mask_px

    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self._step = jax.jit(step, in_shardings=(repl, data, repl), out_shardings=(repl, repl, data, data))

  def confusions(self, state, progress=None):
    """({"model" | fill: (PA confusion, global confusion)}, picture or None), accumulated over the split."""
    n = self.num_classes
    zeros = lambda: [np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)]
    confs = {"model": zeros(), **{b: zeros() for b in self.baselines}}
    base_key = jax.random.PRNGKey(self.seed)
    picture = None
    for i, local in enumerate(tracked(self._batches(), progress, self.num_items)):
      batch = sharding.to_global({k: local[k] for k in ("image", "label", "valid")}, self.mesh)
      c_pa, c_all, composed, mask_px = self._step(state, batch, jax.random.fold_in(base_key, i))
      confs["model"][0] += np.asarray(jax.device_get(c_pa), np.int64)
      confs["model"][1] += np.asarray(jax.device_get(c_all), np.int64)
      mask_local = local_rows(mask_px)
      filled = {}
      for b in self.baselines:
        f_pa, f_all, filled[b] = fill_confusions(b, np.asarray(local["label"], np.int64), mask_local,
                                                 local["raw_image"], np.asarray(local["valid"], bool), n,
                                                 self.ignore_label)
        confs[b][0] += f_pa
        confs[b][1] += f_all
      if i == 0 and self.num_images > 0 and jax.process_index() == 0:
        picture = self._picture(local, local_rows(composed), mask_local, filled)
    for b in self.baselines:
      confs[b] = [sum_over_processes(c) for c in confs[b]]
    return confs, picture

  def run(self, state, progress=None) -> EvalResult:
    confs, picture = self.confusions(state, progress)
    scalars = {}
    for who, (conf_pa, conf_all) in confs.items():
      prefix = self.name if who == "model" else f"{self.name}/{who}"
      scalars.update(metrics.summarize(conf_all, prefix, self.class_names))
      scalars.update(renamed(metrics.summarize(conf_pa, "pa", self.class_names), "pa", f"{prefix}/pa_"))
    scalars.update(margins(scalars, self.name, self.baselines))
    images = {f"{self.name}/completions": picture} if picture is not None else {}
    return EvalResult(scalars, images)

  def _picture(self, local, composed, mask_px, filled: dict) -> np.ndarray:
    """Rows of: image | what the model sees | model's completion | each fill's completion | ground truth,
    titled, with a legend (classes, void, masked patches) underneath."""
    rows = []
    for j in range(min(self.num_images, int(np.sum(local["valid"])))):
      label = local["label"][j].astype(np.uint8)
      raw = local["raw_image"][j]
      fills_j = [filled[b][j].astype(np.uint8) for b in self.baselines]
      rows.append([raw, inf.masked_view(raw, label, mask_px[j]), composed[j].astype(np.uint8), *fills_j, label])
    titles = ["image", "given", "L-MAE", *self.baselines, "truth"]
    legend = visualize.class_legend(self.num_classes, self.class_names, masked=True)
    return visualize.with_legend(visualize.grid(rows), legend, titles=titles)
