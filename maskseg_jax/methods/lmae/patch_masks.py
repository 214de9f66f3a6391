"""Patch masks for L-MAE with static shapes, so one jitted step serves every strategy and sample.

A mask is derived from per-patch scores (highest score masked first) and a static number `K` of visible
patches, so random, Background-First and Label-First masks can be mixed inside a single batch. Patches are
numbered row-major over the `(H/p, W/p)` grid, matching `patchify`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from maskseg_jax.errors import ConfigError

# Weight of the uniform noise that breaks ties in the BF/LF scores (spec: `b_i + 1e-3 u_i`).
TIE_NOISE = 1e-3


def patchify(x: jax.Array, p: int) -> jax.Array:
  """[B,H,W,C] -> [B,L,p*p*C], patches row-major, each flattened in (row, col, channel) order."""
  b, h, w, c = x.shape
  if h % p or w % p:
    raise ValueError(f"patchify: image size {(h, w)} is not divisible by patch size {p}")
  x = x.reshape(b, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def gather_tokens(x: jax.Array, ids: jax.Array) -> jax.Array:
  """x[B,L,D], ids int[B,K] -> [B,K,D]."""
  return jnp.take_along_axis(x, ids[..., None], axis=1)


def patch_pixel_values(x: jax.Array, ids: jax.Array, p: int) -> jax.Array:
  """The pixels of patches `ids` (int[B,K]) of x[B,H,W,C], as [B*K*p*p, C]: a static-shape gather, so a loss
  over the masked pixels only touches K/L of the image."""
  c = x.shape[-1]
  return gather_tokens(patchify(x, p), ids).reshape(-1, c)


def unpatchify(tokens: jax.Array, p: int, h: int, w: int) -> jax.Array:
  """[B,L,p*p*C] -> [B,H,W,C], the inverse of `patchify`."""
  b, l, d = tokens.shape
  gh, gw = h // p, w // p
  if gh * gw != l or d % (p * p):
    raise ValueError(f"unpatchify: {l} tokens of width {d} do not tile a {(h, w)} image with patch size {p}")
  c = d // (p * p)
  x = tokens.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def patch_pixels(mask: jax.Array, p: int, h: int, w: int) -> jax.Array:
  """bool[B,L] patch mask (row-major grid) -> bool[B,H,W] pixel mask."""
  pix = jnp.broadcast_to(mask[..., None], mask.shape + (p * p,)).astype(jnp.uint8)
  return unpatchify(pix, p, h, w)[..., 0] > 0


def masked_pixels(ids_masked: jax.Array, p: int, h: int, w: int) -> jax.Array:
  """int[B,M] ids of masked patches (row-major grid) -> bool[B,H,W] pixels of those patches."""
  b = ids_masked.shape[0]
  mask = jnp.zeros((b, (h // p) * (w // p)), bool).at[jnp.arange(b)[:, None], ids_masked].set(True)
  return patch_pixels(mask, p, h, w)


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """Static number of visible patches `K = int(L * (1 - m))`.

  A 1e-6 guard absorbs float error, so e.g. L=100, m=0.9 gives 10 rather than 9.
  """
  if not 0.0 <= mask_ratio < 1.0:
    raise ConfigError(f"mask ratio must be in [0, 1), got {mask_ratio}")
  k = int(math.floor(num_patches * (1.0 - mask_ratio) + 1e-6))
  if k < 1:
    raise ConfigError(f"mask ratio {mask_ratio} leaves no visible patch out of {num_patches}; lower it")
  return k


def background_proportion(label: jax.Array, p: int, background_classes: Sequence[int],
                          ignore_label: int = 255) -> jax.Array:
  """float[B,L]: fraction of each patch's pixels that are a background class or void (`ignore_label`)."""
  bg = label == ignore_label
  for c in background_classes:
    bg = bg | (label == c)
  return patchify(bg[..., None].astype(jnp.float32), p).mean(axis=-1)


def patches_containing(pixel_mask: jax.Array, p: int) -> jax.Array:
  """bool[B,L]: patches holding at least one True pixel of `pixel_mask` bool[B,H,W] (e.g. unknown pixels)."""
  return patchify(pixel_mask[..., None].astype(jnp.float32), p).max(axis=-1) > 0


def random_scores(rng: jax.Array, b: jax.Array) -> jax.Array:
  """Random mask: `s_i = u_i`; `b` only gives the shape."""
  return jax.random.uniform(rng, b.shape)


def background_first_scores(rng: jax.Array, b: jax.Array) -> jax.Array:
  """Background-First: `s_i = b_i + 1e-3 u_i`, so the most background-heavy patches are masked first."""
  return b + TIE_NOISE * jax.random.uniform(rng, b.shape)


def label_first_scores(rng: jax.Array, b: jax.Array) -> jax.Array:
  """Label-First: `s_i = (1 - b_i) + 1e-3 u_i`, so the most labelled patches are masked first."""
  return (1.0 - b) + TIE_NOISE * jax.random.uniform(rng, b.shape)


ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
MASK_STRATEGIES: dict[str, ScoreFn] = {
    "random": random_scores,
    "background_first": background_first_scores,
    "label_first": label_first_scores,
}
# Index order of `probs` in `mixed_strategy_scores` and of `draw_strategies`' output.
STRATEGY_ORDER = ("random", "background_first", "label_first")


def draw_strategies(rng: jax.Array, batch: int, probs: Sequence[float] = (1, 2, 2)) -> jax.Array:
  """int[B]: per-sample index into `STRATEGY_ORDER`, drawn with relative weights `probs`."""
  if len(probs) != len(STRATEGY_ORDER) or min(probs) < 0 or sum(probs) <= 0:
    raise ConfigError(f"strategy probs must be {len(STRATEGY_ORDER)} non-negative weights "
                      f"for {STRATEGY_ORDER}, got {tuple(probs)}")
  p = jnp.asarray(probs, jnp.float32)
  return jax.random.choice(rng, len(STRATEGY_ORDER), (batch,), p=p / p.sum())


def mixed_strategy_scores(rng: jax.Array, b: jax.Array, probs: Sequence[float] = (1, 2, 2)) -> jax.Array:
  """float[B,L] scores with the strategy drawn per sample (Random:BF:LF = `probs`), for one static-K mask."""
  k_strategy, k_noise = jax.random.split(rng)
  which = draw_strategies(k_strategy, b.shape[0], probs)
  # The same noise serves all three: each sample uses exactly one of them.
  all_scores = jnp.stack([MASK_STRATEGIES[n](k_noise, b) for n in STRATEGY_ORDER])  # [S,B,L]
  return jnp.take_along_axis(all_scores, which[None, :, None], axis=0)[0]


def forced_scores(scores: jax.Array, force: jax.Array) -> jax.Array:
  """Lifts forced patches (bool[B,L]) above every other score so they are always masked first.

  Forced patches keep their relative order, so if they exceed the masked budget the highest-scoring ones win.
  """
  span = scores.max(axis=-1, keepdims=True) - scores.min(axis=-1, keepdims=True) + 1.0
  return jnp.where(force, scores + span, scores)


def mask_from_scores(scores: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Masks the `L - k` highest-scoring patches; `k` is static.

  Returns `(ids_keep int[B,k], ids_masked int[B,L-k], mask bool[B,L])`, mask True = masked. Both id lists
  are sorted by position; ties are broken toward the lower patch index being masked.
  """
  bsz, l = scores.shape
  if not 0 < k <= l:
    raise ValueError(f"mask_from_scores: need 0 < k <= {l} visible patches, got k={k}")
  order = jnp.argsort(-scores, axis=-1, stable=True)
  ids_masked = jnp.sort(order[:, :l - k], axis=-1).astype(jnp.int32)
  ids_keep = jnp.sort(order[:, l - k:], axis=-1).astype(jnp.int32)
  mask = jnp.zeros((bsz, l), bool).at[jnp.arange(bsz)[:, None], ids_masked].set(True)
  return ids_keep, ids_masked, mask
