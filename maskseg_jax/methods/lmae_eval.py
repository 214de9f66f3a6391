"""L-MAE evaluation: PA-mIoU (masked-patch pixels only) and global mIoU (given + predicted vs truth).

One evaluator per mask strategy. The masking noise comes from a fixed key folded with the batch index, so
the same images get the same masks at every eval and numbers are comparable between steps and runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import lmae_inference as inf
from maskseg_jax import metrics, sharding, visualize
from maskseg_jax.masking import patches as P
from maskseg_jax.methods.base import EvalResult


def renamed(scalars: dict, old: str, new: str) -> dict:
  """`summarize` keys `old/x` -> `new + x` (e.g. 'val/pa_' + 'miou')."""
  return {new + k[len(old) + 1:]: v for k, v in scalars.items()}


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
    self._batches = lambda: pipeline.eval_batches(source, data_config, process_index=jax.process_index(),
                                                  process_count=jax.process_count())
    p, h, w, num_patches = inf.geometry(model_config)
    k = P.num_visible(num_patches, float(lmae_config.mask_ratio))
    bg = tuple(int(c) for c in lmae_config.background_classes)
    ignore = int(data_config.ignore_label)

    def step(state, batch, rng):
      label = batch["label"]
      ids_keep, ids_masked, mask = inf.strategy_mask(label, rng, strategy=strategy, k=k, p=p,
                                                     background_classes=bg, ignore_label=ignore)
      model = mdef.merge(state["params"], state["batch_stats"])
      pred = jnp.argmax(model(batch["image"], label, ids_keep, ids_masked, train=False), -1).astype(jnp.int32)
      mask_px = inf.patch_pixels(mask, p, h, w)
      valid = batch["valid"][:, None, None]
      conf_pa = metrics.confusion_matrix(pred, label, num_classes, ignore_label=ignore, region=mask_px & valid)
      composed = inf.compose(label, pred, mask_px)
      conf_all = metrics.confusion_matrix(composed, label, num_classes, ignore_label=ignore, region=valid)
      return conf_pa, conf_all, composed, mask_px

    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self._step = jax.jit(step, in_shardings=(repl, data, repl), out_shardings=(repl, repl, data, data))

  def confusions(self, state):
    """(PA confusion, global confusion, picture or None), accumulated over the whole split."""
    n = self.num_classes
    conf_pa, conf_all = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
    base_key = jax.random.PRNGKey(self.seed)
    picture = None
    for i, local in enumerate(self._batches()):
      batch = sharding.to_global({k: local[k] for k in ("image", "label", "valid")}, self.mesh)
      c_pa, c_all, composed, mask_px = self._step(state, batch, jax.random.fold_in(base_key, i))
      conf_pa += np.asarray(jax.device_get(c_pa), np.int64)
      conf_all += np.asarray(jax.device_get(c_all), np.int64)
      if i == 0 and self.num_images > 0 and jax.process_index() == 0:
        picture = self._picture(local, local_rows(composed), local_rows(mask_px))
    return conf_pa, conf_all, picture

  def run(self, state) -> EvalResult:
    conf_pa, conf_all, picture = self.confusions(state)
    scalars = metrics.summarize(conf_all, self.name, self.class_names)
    scalars.update(renamed(metrics.summarize(conf_pa, "pa", self.class_names), "pa", f"{self.name}/pa_"))
    images = {f"{self.name}/completions": picture} if picture is not None else {}
    return EvalResult(scalars, images)

  def _picture(self, local, composed, mask_px) -> np.ndarray:
    """Rows of: image | what the model sees (label on visible patches) | completed label | ground truth."""
    rows = []
    for j in range(min(self.num_images, int(np.sum(local["valid"])))):
      label = local["label"][j].astype(np.uint8)
      raw = local["raw_image"][j]
      rows.append([raw, inf.masked_view(raw, label, mask_px[j]), composed[j].astype(np.uint8), label])
    return visualize.grid(rows)
