"""Per-pixel classification losses. Each returns `(sum, count)` so callers divide once, after summing over
devices or micro-batches, and padding pixels (label 255) never bias the mean."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def cross_entropy(logits, labels, *, ignore_label: int = 255, weights=None):
  """Softmax cross entropy over pixels whose label is not `ignore_label`.

  logits: float[..., C]; labels: int[...]; weights: optional float[...] per-pixel weights (e.g. class weights
  gathered by label, or a confidence mask). Returns (sum of weighted CE, sum of weights over counted pixels).
  """
  num_classes = logits.shape[-1]
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  del num_classes
  w = valid.astype(jnp.float32)
  if weights is not None:
    w = w * weights
  return jnp.sum(nll * w), jnp.sum(w)


def weighted_cross_entropy(logits, labels, class_weights, *, ignore_label: int = 255, region=None):
  """Class-frequency weighted CE (L-MAE eq. 10-12): sum w_{y_n} CE_n / sum w_{y_n} over counted pixels.

  region: optional bool[...] restricting the counted pixels (e.g. masked patches only).
  """
  safe = jnp.where(labels == ignore_label, 0, labels).astype(jnp.int32)
  w = jnp.asarray(class_weights, jnp.float32)[safe]
  if region is not None:
    w = w * region.astype(jnp.float32)
  return cross_entropy(logits, labels, ignore_label=ignore_label, weights=w)


# Fewest bits of an error kept in a packed sort key (below, the exact float argsort is used instead).
MIN_PACKED_ERROR_BITS = 12


def descending_order(err):
  """Indices sorting err (float[n] in [0, 1]) in decreasing order, ties by index.

  One int32 sort of packed keys (quantized 1 - err in the high bits, the index in the low bits) instead of a
  float argsort: XLA's CPU sort runs about 6x faster on a single int32 operand. Errors closer than
  2^-(31 - ceil(log2 n)) may swap (2^-15 at n <= 65536), which moves the Lovasz loss by at most that much;
  when fewer than MIN_PACKED_ERROR_BITS bits would be left, the exact argsort runs.
  """
  n = err.shape[0]
  index_bits = max(1, (n - 1).bit_length())
  error_bits = 31 - index_bits
  if error_bits < MIN_PACKED_ERROR_BITS:
    return jnp.argsort(-err)
  quantized = jnp.round((1.0 - jnp.clip(err, 0.0, 1.0)) * (2 ** error_bits - 1)).astype(jnp.int32)
  keys = (quantized << index_bits) | jnp.arange(n, dtype=jnp.int32)
  return jnp.sort(keys) & ((1 << index_bits) - 1)


def lovasz_softmax(logits, labels, *, ignore_label: int = 255, region=None):
  """Lovasz-softmax loss (Berman et al., CVPR 2018): the convex Lovasz extension of the Jaccard loss 1 - IoU_c,
  averaged over the classes present in the counted pixels of the whole batch (a surrogate of mIoU).

  For each class the pixel errors |[y = c] - p_c| are sorted in decreasing order and weighted by the Jaccard
  loss's discrete gradient along that order. Pixels not counted (`ignore_label`, outside `region`) get error 0,
  which sorts them last, where they change no weight of a counted pixel. A scalar (not a (sum, count) pair: the
  loss does not decompose over pixels); 0 when no pixel is counted. At one-hot probabilities it equals
  mean_c (1 - IoU_c) exactly (a test checks it).
  """
  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).reshape(-1, num_classes)
  flat = labels.reshape(-1)
  valid = (flat != ignore_label) & (flat >= 0) & (flat < num_classes)
  if region is not None:
    valid = valid & region.reshape(-1)
  fg = jax.nn.one_hot(jnp.where(valid, flat, -1), num_classes, dtype=jnp.float32)  # [P,C], 0 where not counted
  errors = jnp.abs(fg - probs) * valid[:, None].astype(jnp.float32)

  def one_class(err, gt):
    order = descending_order(jax.lax.stop_gradient(err))
    err, gt = err[order], gt[order]
    total = jnp.sum(gt)
    jaccard = 1.0 - (total - jnp.cumsum(gt)) / jnp.maximum(total + jnp.cumsum(1.0 - gt), 1e-12)
    weight = jnp.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jnp.dot(err, jax.lax.stop_gradient(weight)), total > 0

  per_class, present = jax.vmap(one_class, in_axes=(1, 1))(errors, fg)
  n = jnp.sum(present)
  return jnp.where(n > 0, jnp.sum(jnp.where(present, per_class, 0.0)) / jnp.maximum(n, 1), 0.0)


def class_frequencies(label_counts: np.ndarray) -> np.ndarray:
  """Pixel frequency f_c of every class from per-class pixel counts (void already excluded)."""
  counts = np.asarray(label_counts, np.float64)
  total = counts.sum()
  if total <= 0:
    raise ValueError("class_frequencies: the training labels hold no non-void pixel")
  return counts / total


def lmae_class_weights(freqs, *, beta: float = 1.0, gamma: float = 1.0, xi: float = 1e-6) -> np.ndarray:
  """w_c = 1 - 1 / (1 + beta * exp(-(f_c - E) / (V + xi)) ** gamma), E and V the mean and variance of f.

  Rare classes (f_c < E) get weights near 1, frequent ones near 0. The exponent is clipped so a tiny
  variance cannot overflow to inf (the weight then saturates at 0 or 1, which is the limit anyway).
  """
  f = np.asarray(freqs, np.float64)
  mean, var = f.mean(), f.var()
  z = np.clip(-(f - mean) / (var + xi), -60.0, 60.0)
  return (1.0 - 1.0 / (1.0 + beta * np.exp(z) ** gamma)).astype(np.float32)
