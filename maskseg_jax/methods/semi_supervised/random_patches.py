"""Random patch masks with a static number of masked patches (S4MIM masked view, MaskMatch proxy).

An exact count per sample (not Bernoulli per patch) keeps every sample equally hard and the shapes
static under jit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def num_masked_patches(h: int, w: int, patch: int, ratio: float) -> int:
  """Static K: round(ratio * number of patches), patches covering the image (last row/col may be partial)."""
  n = math.ceil(h / patch) * math.ceil(w / patch)
  return min(n, max(0, int(round(ratio * n))))


def random_patch_mask(rng, batch: int, h: int, w: int, patch: int, ratio: float):
  """bool[B, H, W], True = masked pixel; exactly `num_masked_patches` patches masked per sample."""
  gh, gw = math.ceil(h / patch), math.ceil(w / patch)
  k = num_masked_patches(h, w, patch, ratio)
  scores = jax.random.uniform(rng, (batch, gh * gw))
  ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  grid = (ranks < k).reshape(batch, gh, gw)
  pixels = jnp.repeat(jnp.repeat(grid, patch, axis=1), patch, axis=2)
  return pixels[:, :h, :w]


def apply_pixel_mask(image, mask, fill: float = 0.0):
  """Sets masked pixels (bool[B,H,W]) of a [B,H,W,C] image to `fill` (0 = the mean after normalization)."""
  return jnp.where(mask[..., None], jnp.asarray(fill, image.dtype), image)
