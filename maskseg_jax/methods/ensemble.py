"""MaskMatch multi-scale ensembling of teacher predictions for sharper pseudo-labels.

Each scale sees different context; averaging the softmax maps (after resizing back to the crop) gives
more reliable labels than one scale. Scales are static, so every scale is one traced forward pass.
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


def multiscale_probs(apply_fn: Callable, images, scales: Sequence[float] = (0.75, 1.0, 1.25),
                     size_divisor: int = 1):
  """Mean over `scales` of softmax(apply_fn(resized images)) resized back to the crop: [B,H,W,C].

  apply_fn(x [B,h,w,3]) -> logits [B,h',w',C] (any resolution; it is resized back). Scaled sizes are
  rounded to a multiple of `size_divisor` (use e.g. the output stride if the model needs it).
  """
  b, h, w, _ = images.shape
  total = None
  for s in scales:
    hs = max(size_divisor, int(round(h * s / size_divisor)) * size_divisor)
    ws = max(size_divisor, int(round(w * s / size_divisor)) * size_divisor)
    logits = apply_fn(_resize(images, hs, ws))
    probs = _resize(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), h, w)
    total = probs if total is None else total + probs
  return total / len(scales)
