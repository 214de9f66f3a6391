"""Confusion matrices and IoU summaries.

`confusion_matrix` is a pure jnp function (rows = ground truth, columns = prediction) that ignores pixels
labelled `ignore_label` or outside `region`, so sums over padded, sharded batches are exact. The summaries run
on the host on the accumulated integer matrix.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def confusion_matrix(pred, labels, num_classes: int, *, ignore_label: int = 255, region=None):
  """int32[C, C] counts of (truth, prediction) over counted pixels."""
  valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  if region is not None:
    valid = valid & region
  idx = jnp.where(valid, labels * num_classes + pred, 0).astype(jnp.int32).reshape(-1)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[idx].add(valid.reshape(-1).astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
  """IoU of every class; NaN where the class never occurs in truth or prediction (zero union)."""
  conf = np.asarray(conf, np.float64)
  inter = np.diag(conf)
  union = conf.sum(0) + conf.sum(1) - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def summarize(conf: np.ndarray, prefix: str, class_names: Sequence[str] | None = None) -> dict[str, float]:
  """`{prefix}/miou` (mean over classes with non-zero union), pixel accuracy and per-class IoU."""
  conf = np.asarray(conf, np.float64)
  ious = iou_per_class(conf)
  names = list(class_names) if class_names else [str(i) for i in range(len(ious))]
  out = {
      f"{prefix}/miou": float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else 0.0,
      f"{prefix}/pixel_acc": float(np.trace(conf) / max(conf.sum(), 1.0)),
  }
  for name, iou in zip(names, ious):
    if not np.isnan(iou):
      out[f"{prefix}/iou/{name}"] = float(iou)
  return out
