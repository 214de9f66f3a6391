"""Segmentation evaluation: jitted confusion-matrix accumulation over padded, sharded batches.

`SegmentationEvaluator` owns its jitted code (as big_vision's evaluators do). Whole-image eval pads every
image to `data.eval_size` (padding is labelled 255 and so never counted); sliding-window eval averages
softmax scores of overlapping windows at static positions.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import metrics, sharding, visualize
from maskseg_jax.methods.base import EvalResult, tracked


def window_starts(size: int, window: int, stride: int) -> list[int]:
  """Static window offsets covering [0, size): regular strides plus one flush with the end."""
  if window >= size:
    return [0]
  starts = list(range(0, size - window + 1, stride))
  if starts[-1] != size - window:
    starts.append(size - window)
  return starts


def sliding_window_probs(logits_fn: Callable, images, window, stride, num_classes: int):
  """Average softmax over windows; logits_fn maps [B, wh, ww, 3] -> [B, wh, ww, C]."""
  b, h, w, _ = images.shape
  wh, ww = min(window[0], h), min(window[1], w)
  probs = jnp.zeros((b, h, w, num_classes), jnp.float32)
  counts = jnp.zeros((1, h, w, 1), jnp.float32)
  for y in window_starts(h, wh, stride[0]):
    for x in window_starts(w, ww, stride[1]):
      p = jax.nn.softmax(logits_fn(images[:, y:y + wh, x:x + ww]).astype(jnp.float32), axis=-1)
      probs = probs.at[:, y:y + wh, x:x + ww].add(p)
      counts = counts.at[:, y:y + wh, x:x + ww].add(1.0)
  return probs / counts


class SegmentationEvaluator:
  """mIoU + per-class IoU of a segmenter on one split, plus an image | prediction | truth picture grid."""

  def __init__(self, *, name: str, source, data_config, logits_fn: Callable, mesh, num_classes: int,
               class_names=None, num_images: int = 4):
    from maskseg_jax.data import pipeline
    self.name, self.source, self.dc, self.mesh = name, source, data_config, mesh
    self.num_classes, self.class_names, self.num_images = num_classes, class_names, num_images
    self._batches = lambda: pipeline.eval_batches(source, data_config, process_index=jax.process_index(),
                                                  process_count=jax.process_count())
    dc = data_config

    def predict(state, images):
      if dc.eval_mode == "sliding":
        probs = sliding_window_probs(lambda x: logits_fn(state, x), images, tuple(dc.eval_window),
                                     tuple(dc.eval_stride), num_classes)
        return jnp.argmax(probs, -1)
      return jnp.argmax(logits_fn(state, images), -1)

    def step(state, batch):
      pred = predict(state, batch["image"])
      valid = batch["valid"][:, None, None]
      conf = metrics.confusion_matrix(pred, batch["label"], num_classes, region=valid)
      return conf, pred

    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self._step = jax.jit(step, in_shardings=(repl, data), out_shardings=(repl, data))

  def run(self, state, progress=None) -> EvalResult:
    from maskseg_jax.data import pipeline
    conf = np.zeros((self.num_classes, self.num_classes), np.int64)
    picture = None
    total = pipeline.eval_num_items(self.source, self.dc)
    for i, local in enumerate(tracked(self._batches(), progress, total)):
      batch = sharding.to_global({k: local[k] for k in ("image", "label", "valid")}, self.mesh)
      c, pred = self._step(state, batch)
      conf += np.asarray(jax.device_get(c), np.int64)
      if i == 0 and self.num_images > 0 and jax.process_index() == 0:
        picture = self._picture(local, pred)
    scalars = metrics.summarize(conf, self.name, self.class_names)
    return EvalResult(scalars, {f"{self.name}/predictions": picture} if picture is not None else {})

  def _picture(self, local, pred) -> np.ndarray:
    n = min(self.num_images, int(np.sum(local["valid"])))
    # This process's rows of the global prediction, in batch order.
    shards = sorted(pred.addressable_shards, key=lambda s: s.index[0].start or 0)
    preds = np.concatenate([np.asarray(s.data) for s in shards])
    return segmentation_picture(local["raw_image"][:n], preds[:n], local["label"][:n], self.num_classes,
                                self.class_names)


def segmentation_picture(images, preds, labels, num_classes: int, class_names=None) -> np.ndarray:
  """Rows of image | prediction | truth, titled, with a legend of the classes and void underneath."""
  rows = [[im, p.astype(np.uint8), np.asarray(lb).astype(np.uint8)] for im, p, lb in zip(images, preds, labels)]
  return visualize.with_legend(visualize.grid(rows), visualize.class_legend(num_classes, class_names),
                               titles=("image", "prediction", "truth"))
