"""This project's extensions to L-MAE (beyond the paper), each behind a `model.*` flag of `build_lmae`.

  model.prior = "nearest"   Nearest-visible-label prior: every masked pixel gets the label of its nearest visible
                            pixel (computed in-graph from the visible labels only, by jump flooding), and its
                            one-hot joins the image patch in Image Patch Supplement, so a masked token starts from
                            "what a two-line fill would say" instead of from the image alone.
  model.prior = "geodesic"  Geodesic-visible-label prior: the same, but "nearest" along image regions (the geodesic
                            fill of `fills.py`, in-graph by Bellman-Ford relaxation), so the prior does not leak
                            a label across a colour edge (measured on CamVid: no gain over "nearest", README).
  model.refine_width = C    Pixel-level refinement head: a small conv U-Net over the image, the decoder's logits,
                            the prior and the visible labels adds residual logits at full resolution (zero-init,
                            so it starts as the plain model), so predictions follow image edges instead of being
                            blocky per patch.
  model.prior_skip = True   Prior skip: logits += W[distance bucket, prior class] at the prior's class, W learned
                            (zero-init, one weight per bucket of the distance to the prior's seed and per class), so
                            the model learns a correction of the fill instead of re-learning to copy it: the fill is
                            surest next to its seed (on CamVid it beat the model on the pixels within 1.5 px of one).

Seven more extensions live where they act: `lmae.mirror_average` (logits averaged with the mirrored input at
eval and completion, `inference.single_pass_logits`), `lmae.progressive_reveal` (the masked patches the model is
surest of join the visible ones with their predicted labels and the rest is completed again, in a few rounds,
`inference.completion_logits`), `lmae.fill_blend` (the softmax mixed with the one-hot
geodesic fill there too, so the fill decides where the model is unsure) with `lmae.fill_blend_reach` (the
fill's weight falling off with the distance to the visible pixel it copies), `lmae.lovasz_weight`
(+ Lovasz-softmax on the masked pixels, `losses/segmentation.py`, added in `task.make_train_step`) and
`lmae.train_mask_ratios` (each training batch cut into slices masked at several ratios, `task.make_train_step`)
and `lmae.pixel_context` (completion only, on by default: the given pixels inside a masked patch seed the prior
and the blended fill, `inference.single_pass_logits`; a hole that covers part of a patch no longer hides the
rest of it from the prior).

Why: on CamVid the paper's model completes labels worse than the nearest fill (README). Their effect is measured
by `experiments/lmae_ablations.py --groups=extensions` (tables in the README and experiments/results/).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from maskseg_jax.config_base import IMAGENET_STD
from maskseg_jax.errors import ConfigError


def nearest_visible_label(label: jax.Array, known: jax.Array) -> jax.Array:
  """int[B,H,W]: the label of the nearest `known` pixel (Euclidean), -1 where no pixel is known."""
  return nearest_visible_seed(label, known)[0]


def nearest_visible_seed(label: jax.Array, known: jax.Array):
  """(label int[B,H,W], seed row f32[B,H,W], seed col f32[B,H,W]) of the nearest `known` pixel; -1 / 1e9 where
  no pixel is known.

  Jump flooding (Rong & Tan 2006) with one extra step-1 pass: log2(max(H, W)) + 1 rounds, each taking the best of
  9 candidates at offsets {-k, 0, k}^2. The rounds run in a `fori_loop` and the 9 candidates are compared at once:
  an unrolled chain of compares lets XLA fuse (and recompute) the whole flood, which compiles for minutes.
  `label` is read only where `known` is True.
  """
  b, h, w = label.shape
  big = jnp.float32(1e9)
  ys = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  seeds = jnp.stack([jnp.where(known, ys, big), jnp.where(known, xs, big),
                     jnp.where(known, label, -1).astype(jnp.float32)])  # [3,B,H,W]: seed row, col, label
  rounds = int(math.ceil(math.log2(max(h, w, 2))))
  steps = jnp.asarray([2 ** i for i in reversed(range(rounds))] + [1], jnp.int32)
  pad = 2 ** (rounds - 1)
  fill = jnp.asarray([big, big, -1.0])[:, None, None, None]

  def one_round(i, seeds):
    k = steps[i]
    padded = jnp.pad(seeds, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=0.0)
    inside = jnp.pad(jnp.ones((h, w), bool), ((pad, pad), (pad, pad)))
    cands = []
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        start = (pad + dy * k, pad + dx * k)
        c = jax.lax.dynamic_slice(padded, (0, 0, start[0], start[1]), (3, b, h, w))
        ok = jax.lax.dynamic_slice(inside, start, (h, w))
        cands.append(jnp.where(ok[None, None], c, fill))
    cands = jnp.stack(cands)  # [9,3,B,H,W]
    dist = (cands[:, 0] - ys) ** 2 + (cands[:, 1] - xs) ** 2  # [9,B,H,W]
    best = jnp.argmin(dist, axis=0)
    return jnp.take_along_axis(cands, best[None, None], axis=0)[0]

  seeds = jax.lax.fori_loop(0, rounds + 1, one_round, seeds)
  return seeds[2].astype(jnp.int32), seeds[0], seeds[1]


# fills.COLOUR_COST per RGB distance in [0, 1] units; the model sees images normalized by the ImageNet std, so a
# normalized difference is scaled back by that std (mean of the three channels, within 2% of each).
GEODESIC_COLOUR_COST = 30.0 * float(sum(IMAGENET_STD) / 3)
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def geodesic_visible_seed(label: jax.Array, known: jax.Array, image: jax.Array):
  """Like `nearest_visible_seed`, but the seed is the `known` pixel reached by the cheapest 8-connected path,
  a step costing its length times (1 + cost x the colour distance it crosses): `fills.geodesic_fill` in-graph.

  Jacobi relaxation (Bellman-Ford) for H + W rounds, each taking the best of the 8 neighbours: exact for every
  shortest path of at most H + W steps (the Chebyshev-nearest seed is always within max(H, W) steps, so every
  pixel is reached; a cheaper path with more steps than that is missed). `image` is the normalized image.
  """
  b, h, w = label.shape
  big = jnp.float32(1e9)
  ys = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  state = jnp.stack([jnp.where(known, 0.0, big), jnp.where(known, ys, big), jnp.where(known, xs, big),
                     jnp.where(known, label, -1).astype(jnp.float32)])  # [4,B,H,W]: cost, seed row, col, label
  rgb = jnp.pad(image.astype(jnp.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
  inside = jnp.pad(jnp.ones((h, w), bool), 1)
  step_cost = []  # the cost of stepping from each neighbour into each pixel; never from outside the image
  for dy, dx in _NEIGHBOURS:
    nb = rgb[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    colour = jnp.linalg.norm(nb - image, axis=-1)
    cost = math.hypot(dy, dx) * (1.0 + GEODESIC_COLOUR_COST * colour)
    step_cost.append(jnp.where(inside[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], cost, big))
  step_cost = jnp.stack(step_cost)  # [8,B,H,W]

  def one_round(_, state):
    padded = jnp.pad(state, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=big)
    cands = jnp.stack([padded[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _NEIGHBOURS])
    cands = cands.at[:, 0].add(step_cost)  # [8,4,B,H,W]
    cands = jnp.concatenate([state[None], cands])
    best = jnp.argmin(cands[:, 0], axis=0)
    return jnp.take_along_axis(cands, best[None, None], axis=0)[0]

  state = jax.lax.fori_loop(0, h + w, one_round, state)
  return state[3].astype(jnp.int32), state[1], state[2]


PRIORS = {  # model.prior -> (label, known, image) -> (seed label, seed row, seed col)
    "nearest": lambda label, known, image: nearest_visible_seed(label, known),
    "geodesic": geodesic_visible_seed,
}


def check_prior(prior: str) -> None:
  """One-line ConfigError for a `model.prior` that is neither "none" nor in `PRIORS`."""
  if prior != "none" and prior not in PRIORS:
    raise ConfigError(f"model.prior={prior!r} is unknown; expected one of {('none', *PRIORS)}")


PRIOR_CUES = 4  # seed distance + RGB difference to the seed, per pixel
SEED_DISTANCE_UNIT = 8.0  # px: the distance cue is in these units (about one patch)


def prior_features(image: jax.Array, label: jax.Array, visible_px: jax.Array, num_classes: int, prior: str):
  """(one-hot float[B,H,W,N] of the prior label, cues float[B,H,W,4]) from the visible labels only.

  Cues tell how far the prior reaches (distance to the seed, in units of SEED_DISTANCE_UNIT px) and whether the pixel looks like
  its seed (normalized-RGB difference), which a small conv head cannot compute when the seed is far away.
  All zero for "none" and where nothing is visible.
  """
  check_prior(prior)
  b, h, w = label.shape
  if prior == "none":
    return jnp.zeros((b, h, w, num_classes), image.dtype), jnp.zeros((b, h, w, PRIOR_CUES), image.dtype)
  known = visible_px & (label >= 0) & (label < num_classes)
  fill, sy, sx = PRIORS[prior](label, known, image)
  found = fill >= 0
  ys = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  dist = jnp.where(found, jnp.sqrt((sy - ys) ** 2 + (sx - xs) ** 2) / SEED_DISTANCE_UNIT, 0.0)
  flat = jnp.where(found, sy * w + sx, 0).astype(jnp.int32).reshape(b, h * w)
  seed_rgb = jnp.take_along_axis(image.reshape(b, h * w, 3), flat[..., None], axis=1).reshape(b, h, w, 3)
  diff = jnp.where(found[..., None], image - seed_rgb, 0.0)
  cues = jnp.concatenate([dist[..., None].astype(image.dtype), diff.astype(image.dtype)], -1)
  return jax.nn.one_hot(fill, num_classes, dtype=image.dtype), cues


# Upper edges (px) of the distance-to-seed buckets of the prior skip; the last bucket is open.
SKIP_DISTANCE_EDGES = (1.5, 2.5, 3.5, 4.5, 6.0, 8.0, 12.0)


class PriorSkip(nnx.Module):
  """Logits added at the prior's class: W[bucket(distance to the seed), class], zero-init (starts as the model)."""

  def __init__(self, num_classes: int):
    self.weight = nnx.Param(jnp.zeros((len(SKIP_DISTANCE_EDGES) + 1, num_classes), jnp.float32))

  def __call__(self, prior: jax.Array, cues: jax.Array) -> jax.Array:
    """prior one-hot float[B,H,W,N], cues from `prior_features` -> float[B,H,W,N] (0 where no prior)."""
    distance = cues[..., 0] * SEED_DISTANCE_UNIT
    bucket = jnp.searchsorted(jnp.asarray(SKIP_DISTANCE_EDGES, distance.dtype), distance, side="right")
    return prior * self.weight[...][bucket].astype(prior.dtype)


class RefineHead(nnx.Module):
  """Residual logits at pixel level from a 3-level conv U-Net (widths C, 2C, 4C; no normalization)."""

  def __init__(self, in_channels: int, width: int, num_classes: int, *, rngs: nnx.Rngs):
    c = width
    conv = lambda i, o, s=1: nnx.Conv(i, o, kernel_size=(3, 3), strides=(s, s), padding="SAME", rngs=rngs)
    self.enc0 = nnx.List([conv(in_channels, c), conv(c, c)])
    self.enc1 = nnx.List([conv(c, 2 * c, 2), conv(2 * c, 2 * c)])
    self.enc2 = nnx.List([conv(2 * c, 4 * c, 2), conv(4 * c, 4 * c)])
    self.dec1 = conv(4 * c + 2 * c, 2 * c)
    self.dec0 = conv(2 * c + c, c)
    self.out = nnx.Conv(c, num_classes, kernel_size=(1, 1), kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h, w = x.shape[1:3]
    if h % 4 or w % 4:
      raise ConfigError(f"model.refine_width needs an image size divisible by 4, got {(h, w)}")
    e0 = _chain(self.enc0, x)
    e1 = _chain(self.enc1, e0)
    e2 = _chain(self.enc2, e1)
    d1 = jax.nn.relu(self.dec1(jnp.concatenate([_up2(e2), e1], -1)))
    d0 = jax.nn.relu(self.dec0(jnp.concatenate([_up2(d1), e0], -1)))
    return self.out(d0)


def _chain(layers, x):
  for layer in layers:
    x = jax.nn.relu(layer(x))
  return x


def _up2(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
