"""L-MAE masking, prediction and composition shared by the train step, the evaluators and label completion.

One definition of each rule: which patches a strategy masks (optionally forcing patches with unknown pixels),
which pixels those patches cover, and how a prediction is composed into a label so that pixels outside the
filled region are copied unchanged. Host-side helpers map labels between an arbitrary size and the model
grid with one explicit nearest-neighbour index map, so a pixel and its model position agree both ways.

Completion-only helpers (`maskseg_jax/complete.py`): tiles of a file at the training field of view
(`tile_starts`), the given labels as confident logits beside the model's at masked patches (`given_logits`,
before the resize), bilinear resizing of logits back to file pixels (`resize_bilinear`), and the few static
masked-patch counts the jitted model is compiled for (`mask_buckets`, `bucket`).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.lmae import extensions as ext
from maskseg_jax.methods.lmae import patch_masks as P


def geometry(model_config) -> tuple[int, int, int, int]:
  """(patch size p, model h, model w, number of patches L) from `model.*`."""
  p = int(model_config.patch_size)
  size = model_config.image_size
  h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
  return p, h, w, (h // p) * (w // p)


patch_pixels = P.patch_pixels  # bool[B,L] patch mask -> bool[B,H,W] pixel mask (shared with the model)


def strategy_choice(rng: jax.Array, batch: int, probs: Sequence[float]) -> jax.Array:
  """int[B] index into `STRATEGY_ORDER` that `mixed_strategy_scores(rng, ...)` uses for each sample.

  `mixed_strategy_scores` splits its key into (strategy, noise) and draws with the first; the train step
  repeats that draw only to log the strategy mix (a test pins the two together).
  """
  return P.draw_strategies(jax.random.split(rng)[0], batch, probs)


def strategy_mask(label: jax.Array, rng: jax.Array, *, strategy: str, k: int, p: int,
                  background_classes: Sequence[int], ignore_label: int = 255, force: jax.Array | None = None):
  """One strategy's static-K mask of int[B,H,W] labels: (ids_keep, ids_masked, mask bool[B,L]).

  `force` (bool[B,L]) patches are masked before any other (explicit unknown regions).
  """
  if strategy not in P.MASK_STRATEGIES:
    raise ConfigError(f"mask strategy {strategy!r} is unknown; expected one of {sorted(P.MASK_STRATEGIES)}")
  b = P.background_proportion(label, p, background_classes, ignore_label)
  scores = P.MASK_STRATEGIES[strategy](rng, b)
  if force is not None:
    scores = P.forced_scores(scores, force)
  return P.mask_from_scores(scores, k)


def mirrored_patch_ids(ids: jax.Array, grid_w: int) -> jax.Array:
  """int[B,K] patch ids of a row-major grid `grid_w` patches wide -> the same patches after a horizontal flip."""
  return (ids // grid_w) * grid_w + (grid_w - 1 - ids % grid_w)


def check_reveal(fractions: Sequence[float]) -> tuple[float, ...]:
  """`lmae.progressive_reveal` as a tuple, or a one-line ConfigError unless increasing fractions in (0, 1)."""
  fractions = tuple(float(f) for f in fractions)
  if any(not 0.0 < f < 1.0 for f in fractions) or any(b <= a for a, b in zip(fractions, fractions[1:])):
    raise ConfigError(f"lmae.progressive_reveal={fractions}; expected increasing fractions in (0, 1), "
                      "e.g. (0.5, 0.8, 0.95)")
  return fractions


def completion_options(lmae_config) -> dict:
  """The inference-time extensions of a run's `lmae` config, as `completion_logits` keywords (eval and
  completion read them here, so both complete the same way)."""
  return dict(mirror=bool(lmae_config.get("mirror_average", False)),
              fill_blend=float(lmae_config.get("fill_blend", 0.0)),
              fill_reach=float(lmae_config.get("fill_blend_reach", 0.0)),
              reveal=check_reveal(lmae_config.get("progressive_reveal", ())))


def completion_logits(model, image: jax.Array, label: jax.Array, ids_keep: jax.Array, ids_masked: jax.Array, *,
                      reveal: Sequence[float] = (), **options) -> jax.Array:
  """The model's logits [B,H,W,N] at inference (eval and completion): `single_pass_logits`, then (this project's
  extension, `lmae.progressive_reveal` = cumulative fractions f1 < f2 < ... of the M masked patches) one more
  pass per fraction: the still-masked patches the last pass is surest of (mean top-class probability over the
  patch), up to round(f x M) revealed in all, join the visible ones with their predicted labels, and the next
  pass completes the rest from that larger context (the model is better the more it sees: PA-mIoU falls from
  ratio 0.5 to 0.75). Revealed patches keep the logits they were revealed with. `options` go to every pass
  (`single_pass_logits`, `given_px` included).
  """
  logits = single_pass_logits(model, image, label, ids_keep, ids_masked, **options)
  p = model.patch_size
  h, w = label.shape[1:]
  m = ids_masked.shape[1]
  keep, still, done = ids_keep, ids_masked, 0
  for fraction in reveal:
    r = int(round(fraction * m)) - done
    if r <= 0 or r >= still.shape[1]:
      continue
    confidence = P.patchify(jnp.max(jax.nn.softmax(logits, -1), -1, keepdims=True), p)  # [B,L,p*p]
    confidence = jnp.take_along_axis(jnp.mean(confidence, -1), still, axis=1)
    order = jnp.argsort(-confidence, axis=1)
    revealed = jnp.take_along_axis(still, order[:, :r], axis=1)
    still = jnp.take_along_axis(still, order[:, r:], axis=1)
    label = jnp.where(P.masked_pixels(revealed, p, h, w), jnp.argmax(logits, -1).astype(label.dtype), label)
    keep, done = jnp.concatenate([keep, revealed], 1), done + r
    again = single_pass_logits(model, image, label, keep, still, **options)
    logits = jnp.where(P.masked_pixels(still, p, h, w)[..., None], again, logits)
  return logits


def single_pass_logits(model, image: jax.Array, label: jax.Array, ids_keep: jax.Array, ids_masked: jax.Array, *,
                       mirror: bool = False, fill_blend: float = 0.0, fill_reach: float = 0.0,
                       given_px: jax.Array | None = None) -> jax.Array:
  """The model's logits [B,H,W,N] from one look at the visible patches.

  `mirror` (this project's extension, `lmae.mirror_average`): also run the horizontally flipped image, label and
  patch mask (the same patches, mirrored) and average the two softmaxes (returned as log-probabilities): street
  scenes are left-right symmetric, so the mirrored view is a second opinion at twice the cost.
  `fill_blend` = a (this project's extension, `lmae.fill_blend`): returns log((1 - a) x softmax + a x one-hot of
  the geodesic fill of the visible labels), so the fill decides where the model is unsure (a < 0.5: where the
  model gives the fill's class within a / (1 - a) of its own top class).
  `fill_reach` = r px (this project's extension, `lmae.fill_blend_reach`; 0 = off): a falls off with the distance d
  from a pixel to the visible pixel its fill copies, a x exp(-d / r): a fill is surest next to its seed.
  `given_px` bool[B,H,W] (this project's extension, `lmae.pixel_context`; completion only, where a label's given
  pixels are known exactly): the given pixels inside masked patches seed the model's prior and the blended fill
  too, so a patch a hole only partly covers is completed from what it still shows.
  """
  logits = model(image, label, ids_keep, ids_masked, train=False, given_px=given_px).astype(jnp.float32)
  if mirror:
    grid_w = image.shape[2] // model.patch_size
    flip_given = None if given_px is None else given_px[:, :, ::-1]
    flipped = model(image[:, :, ::-1], label[:, :, ::-1], mirrored_patch_ids(ids_keep, grid_w),
                    mirrored_patch_ids(ids_masked, grid_w), train=False,
                    given_px=flip_given).astype(jnp.float32)[:, :, ::-1]
    logits = jnp.log((jax.nn.softmax(logits, -1) + jax.nn.softmax(flipped, -1)) / 2 + 1e-12)
  if fill_blend <= 0.0:
    return logits
  onehot, seed_distance = geodesic_fill(image, label, ids_masked, model.patch_size, logits.shape[-1], given_px)
  a = fill_blend * (jnp.exp(-seed_distance / fill_reach) if fill_reach > 0 else 1.0)
  return jnp.log((1.0 - a) * jax.nn.softmax(logits, -1) + a * onehot + 1e-12)


def geodesic_fill(image: jax.Array, label: jax.Array, ids_masked: jax.Array, p: int, num_classes: int,
                  given_px: jax.Array | None = None):
  """(float[B,H,W,N] one-hot of the in-graph geodesic fill from the labels outside the masked patches and at
  `given_px` (zero where no label is visible), float[B,H,W,1] distance in pixels to the visible pixel each fill
  copies): the geodesic prior's one-hot and its first cue."""
  h, w = label.shape[1:]
  visible_px = ~P.masked_pixels(ids_masked, p, h, w)
  if given_px is not None:
    visible_px = visible_px | given_px
  onehot, cues = ext.prior_features(image, label, visible_px, num_classes, "geodesic")
  return onehot.astype(jnp.float32), cues[..., :1].astype(jnp.float32) * ext.SEED_DISTANCE_UNIT


def compose(label: jax.Array, pred: jax.Array, region: jax.Array) -> jax.Array:
  """Prediction inside `region`, the given label everywhere else (works on jnp and np arrays)."""
  xp = np if isinstance(label, np.ndarray) else jnp
  return xp.where(region, pred.astype(label.dtype), label)


def given_pixels(label: np.ndarray, num_classes: int, background_classes: Sequence[int]) -> np.ndarray:
  """Pixels a completion must keep: a foreground class id (not background, void or unknown)."""
  given = label < num_classes
  for c in background_classes:
    given &= label != c
  return given


# --- host-side size mapping ---------------------------------------------------------------------------
def nearest_index(src: int, dst: int) -> np.ndarray:
  """int[dst]: source index sampled by each of `dst` evenly spread output positions (pixel centres)."""
  return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


def resize_nearest(x: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
  """Resizes the first two axes of `x` by nearest neighbour with `nearest_index` (labels, masks)."""
  h, w = x.shape[:2]
  return x[nearest_index(h, int(size_hw[0]))][:, nearest_index(w, int(size_hw[1]))]


def model_patch_of_pixels(size_hw: Sequence[int], model_hw: Sequence[int], p: int) -> np.ndarray:
  """int[H,W]: the model patch each original pixel reads its prediction from (after `resize_nearest` back)."""
  rows = nearest_index(int(model_hw[0]), int(size_hw[0])) // p
  cols = nearest_index(int(model_hw[1]), int(size_hw[1])) // p
  return rows[:, None] * (int(model_hw[1]) // p) + cols[None, :]


def patches_with(pixels: np.ndarray, patch_of_pixel: np.ndarray, num_patches: int,
                 min_fraction: float = 0.0) -> np.ndarray:
  """bool[L]: patches (via `model_patch_of_pixels`) that True pixels of bool[H,W] `pixels` map to: any one
  (min_fraction 0), or at least `min_fraction` of the pixels mapping to the patch."""
  hits = np.bincount(patch_of_pixel[pixels], minlength=num_patches)[:num_patches]
  if min_fraction <= 0.0:
    return hits > 0
  area = np.bincount(patch_of_pixel.reshape(-1), minlength=num_patches)[:num_patches]
  return (hits > 0) & (hits >= min_fraction * area)


# --- completion at the file's resolution -------------------------------------------------------------
# Masked-patch counts (as fractions of L) the completion model is compiled for: a file needing M masked patches
# runs at the smallest bucket >= M, the extra masked patches chosen Background-First (their pixels are never
# written). Few buckets = few compiles; fine ones at the low end, where a few missing pixels are common.
BUCKET_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0)
# A file side up to this much longer than the training field of view is one tile (scale within 10%).
TILE_TOLERANCE = 0.1


def mask_buckets(num_patches: int, extra: Sequence[int] = ()) -> tuple[int, ...]:
  """Sorted masked-patch counts in [1, L - 1] (at least one patch stays visible, as the model needs)."""
  top = max(1, num_patches - 1)
  counts = {math.ceil(f * num_patches) for f in BUCKET_FRACTIONS} | {int(e) for e in extra}
  return tuple(sorted({min(top, max(1, c)) for c in counts}))


def bucket(need: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= `need` (the largest if none is)."""
  return next((b for b in buckets if b >= need), buckets[-1])


def tile_starts(size: int, window: int, tol: float = TILE_TOLERANCE) -> tuple[list[int], int]:
  """(starts, length) of the fewest evenly overlapping windows of `window` px that cover `size` px.

  A side within `tol` of one window (or shorter: the caller pads it to `window`, as training pads small
  images) is a single window of the whole side.
  """
  if size <= window * (1.0 + tol):
    return [0], size
  n = math.ceil(size / window)
  return [int(v) for v in np.linspace(0, size - window, n).round()], window


def _bilinear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(lo, hi, weight of hi) per output position: half-pixel-centre linear interpolation, edges clamped."""
  c = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
  lo = np.floor(c).astype(np.int64)
  f = (c - lo).astype(np.float32)
  hi = np.where(f > 0, np.minimum(lo + 1, src - 1), lo)
  return lo, hi, f


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
  """float32[dst, src]: row i holds the linear-interpolation weights output position i takes from the input."""
  lo, hi, f = _bilinear_taps(src, dst)
  m = np.zeros((dst, src), np.float32)
  np.add.at(m, (np.arange(dst), lo), 1.0 - f)
  np.add.at(m, (np.arange(dst), hi), f)
  return m


def resize_bilinear(x: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
  """float[h,w,C] logits -> float32[H,W,C] by bilinear interpolation (never nearest of argmax labels)."""
  ry = bilinear_matrix(x.shape[0], int(size_hw[0]))
  rx = bilinear_matrix(x.shape[1], int(size_hw[1]))
  return np.einsum("Hh,hwc,Ww->HWc", ry, np.asarray(x, np.float32), rx, optimize=True)


# Softmax level of a given label's logit: a one-hot logit of log(LEVEL (N-1) / (1 - LEVEL)) is softmax LEVEL.
GIVEN_LEVEL = 0.999


def given_logit(num_classes: int, level: float = GIVEN_LEVEL) -> float:
  """The one-hot logit whose softmax puts `level` on its class (0 elsewhere): 9.2 for 11 classes at 99.9%.

  Mixed by interpolation half-and-half with a model logit vector m, the given class c still wins unless
  m_j - m_c > this value, i.e. unless the model is over `level` sure of another class: a given label is as
  confident as a very confident prediction, and no more (logit offsets cancel, so only differences count).
  """
  return float(math.log(level * max(num_classes - 1, 1) / (1.0 - level)))


def given_logits(logits: np.ndarray, label: np.ndarray, masked_px: np.ndarray, num_classes: int,
                 level: float = GIVEN_LEVEL) -> np.ndarray:
  """float32[h,w,N] model-resolution logits to resize: the model's at masked pixels, a one-hot of the given
  class (`given_logit`) at visible class pixels, 0 (no vote) at visible pixels with no class (void, padding).

  A masked-loss model's logits at visible patches were never trained, so they must not vote; the given
  labels do instead, so interpolation next to a hole leans to the classes on its rim.
  """
  cls = (label >= 0) & (label < num_classes)
  onehot = np.eye(num_classes, dtype=np.float32)[np.where(cls, label, 0)] * given_logit(num_classes, level)
  visible = np.where(cls[..., None], onehot, np.float32(0))
  return np.where(masked_px[..., None], np.asarray(logits, np.float32), visible)


def tent(h: int, w: int, floor: float = 0.1) -> np.ndarray:
  """float32[h,w] blending weight of a tile: 1 at its centre, `floor` at its border (overlaps blend smoothly)."""
  def axis(n):
    return 1.0 - (1.0 - floor) * np.abs(2.0 * (np.arange(n) + 0.5) / n - 1.0)
  return np.outer(axis(h), axis(w)).astype(np.float32)


def masked_view(raw_image: np.ndarray, label: np.ndarray, mask_px: np.ndarray, dim: float = 0.35) -> np.ndarray:
  """What the model is given, as a picture: label colours on visible pixels, the dimmed image elsewhere."""
  from maskseg_jax import visualize
  dimmed = (np.asarray(raw_image, np.float32) * dim).astype(np.uint8)
  return np.where(np.asarray(mask_px)[..., None], dimmed, visualize.colorize(label))


def degrade_label(label: np.ndarray, rng: np.random.Generator, *, patch: int = 16, fraction: float = 0.5,
                  background: int = 0) -> np.ndarray:
  """The spec's label-degradation protocol (paper IV-C): a random `fraction` of the label's foreground-bearing
  `patch` x `patch` tiles (edge tiles may be smaller) set to `background`; void pixels in them too."""
  out = label.copy()
  h, w = label.shape
  tiles = [(y, x) for y in range(0, h, patch) for x in range(0, w, patch)
           if ((label[y:y + patch, x:x + patch] != background) & (label[y:y + patch, x:x + patch] != 255)).any()]
  for i in rng.permutation(len(tiles))[:int(round(fraction * len(tiles)))]:
    y, x = tiles[i]
    out[y:y + patch, x:x + patch] = background
  return out
