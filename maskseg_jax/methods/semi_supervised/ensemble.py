"""MaskMatch multi-scale ensembling of teacher predictions for sharper pseudo-labels.

Each scale sees different context; averaging the softmax maps (after resizing back to the crop) gives
more reliable labels than one scale. Scales are static, so every scale is one traced forward pass.
`mean_probs` is the paper's ensemble; `confident_mean` and `align_to_prior` are this project's collapse guards
(`semi.ensemble_guard`): with a weak teacher the plain mean pulls every class that some scale is unsure of
below the threshold, so only the large, easy classes (sky, road) keep feeding the losses and take over.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def _resize(x, h: int, w: int):
  if x.shape[1:3] == (h, w):
    return x
  # No antialiasing, like PyTorch's bilinear F.interpolate that the reference methods use.
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), method="bilinear", antialias=False)


def scale_probs(apply_fn: Callable, images, scales: Sequence[float] = (0.75, 1.0, 1.25),
                size_divisor: int = 1) -> list:
  """softmax(apply_fn(images resized by s)) resized back to the crop, one [B,H,W,C] map per scale.

  apply_fn(x [B,h,w,3]) -> logits [B,h',w',C] (any resolution; it is resized back). Scaled sizes are
  rounded to a multiple of `size_divisor` (use e.g. the output stride if the model needs it).
  """
  b, h, w, _ = images.shape
  out = []
  for s in scales:
    hs = max(size_divisor, int(round(h * s / size_divisor)) * size_divisor)
    ws = max(size_divisor, int(round(w * s / size_divisor)) * size_divisor)
    logits = apply_fn(_resize(images, hs, ws))
    out.append(_resize(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), h, w))
  return out


def mean_probs(probs: Sequence) -> jax.Array:
  """MaskMatch's ensemble: the plain mean of the per-scale softmax maps."""
  return sum(probs[1:], probs[0]) / len(probs)


def confident_mean(probs: Sequence, threshold) -> jax.Array:
  """Mean over only the scales confident at each pixel (max prob >= `threshold(argmax)`), else the plain mean.

  Our collapse guard: averaging confident and unsure scales pulls small objects (which vanish at 0.75x)
  below the threshold, so only the large classes keep passing it; here a pixel passes when a scale that
  sees it well is confident.
  """
  stacked = jnp.stack(list(probs))                                  # [S,B,H,W,C]
  top = jnp.max(stacked, -1)
  keep = (top >= threshold(jnp.argmax(stacked, -1))).astype(stacked.dtype)[..., None]
  n = jnp.sum(keep, 0)
  return jnp.where(n > 0, jnp.sum(stacked * keep, 0) / jnp.maximum(n, 1.0), jnp.mean(stacked, 0))


def align_to_prior(probs, prior, valid):
  """Distribution alignment (ReMixMatch): p * prior / mean_valid(p), renormalized per pixel.

  Our collapse guard: the batch's class marginal of the ensembled labels is pulled to `prior` (the labeled
  set's class frequencies), so classes the ensemble keeps shrinking are boosted back instead of vanishing.
  """
  w = valid.astype(probs.dtype)[..., None]
  marginal = jnp.sum(probs * w, axis=(0, 1, 2)) / jnp.maximum(jnp.sum(w), 1.0)
  aligned = probs * (prior / jnp.maximum(marginal, 1e-6))
  return aligned / jnp.maximum(jnp.sum(aligned, -1, keepdims=True), 1e-12)


def multiscale_probs(apply_fn: Callable, images, scales: Sequence[float] = (0.75, 1.0, 1.25),
                     size_divisor: int = 1):
  """Mean over `scales` of softmax(apply_fn(resized images)) resized back to the crop: [B,H,W,C]."""
  return mean_probs(scale_probs(apply_fn, images, scales, size_divisor))
