"""Tile ("patch") masks for selective-masking pretraining, with static shapes so everything jits.

A `TileGrid` splits a static H x W crop into g x g tiles; each tile is `H // g` by `W // g` pixels and the
last row/column of tiles absorbs the remainder (64 px, g = 5 -> 12, 12, 12, 12, 16). Masks are bool[B, T]
with T = g * g, and exactly `num_masked_tiles(T, ratio)` tiles masked per sample.

The selective scorer draws random masks, reconstructs, scores every tile by `L1 + (1 - SSIM_3x3)` with
segment sums, averages the draws and keeps the top-k tiles: one pure function, no host code, so it can be
jitted over batch-sharded images like a train step. Its window and SSIM scope default to this library's choice;
`ssim_window="gaussian", ssim_scope="tile"` give the authors' scores (docs/selective_masking.md).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.losses.reconstruction import ssim_map

_MASK_FILE_VERSION = 1


def num_masked_tiles(num_tiles: int, ratio: float) -> int:
  """The static number of masked tiles, `round(num_tiles * ratio)` (Python rounding), shared by all masks."""
  if not 0.0 <= ratio <= 1.0:
    raise ConfigError(f"mask ratio must be in [0, 1], got {ratio!r}")
  return int(round(num_tiles * ratio))


@dataclasses.dataclass(frozen=True)
class TileGrid:
  """A g x g tile grid over a static (height, width) crop; hashable, so it can be a static jit argument."""

  height: int
  width: int
  grid: int

  def __post_init__(self):
    for name in ("height", "width", "grid"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"TileGrid.{name} must be a positive int, got {value!r}")
    if self.grid > min(self.height, self.width):
      raise ConfigError(
          f"TileGrid: {self.grid} x {self.grid} tiles do not fit a {self.height}x{self.width} crop "
          "(need grid <= min(height, width))")

  @property
  def num_tiles(self) -> int:
    return self.grid * self.grid

  def _bounds(self, size: int) -> np.ndarray:
    step = size // self.grid
    return np.array([i * step for i in range(self.grid)] + [size], dtype=np.int64)

  @property
  def row_bounds(self) -> np.ndarray:
    """Tile row edges, int[g + 1]; the last tile row ends at `height`."""
    return self._bounds(self.height)

  @property
  def col_bounds(self) -> np.ndarray:
    """Tile column edges, int[g + 1]; the last tile column ends at `width`."""
    return self._bounds(self.width)

  def tile_ids(self) -> np.ndarray:
    """int32[H, W] map of each pixel's tile id `row * g + col` in [0, g * g).

    A numpy constant: it becomes a literal inside jit, so tile boundaries are static.
    """
    rows = np.minimum(np.arange(self.height) // (self.height // self.grid), self.grid - 1)
    cols = np.minimum(np.arange(self.width) // (self.width // self.grid), self.grid - 1)
    return (rows[:, None] * self.grid + cols[None, :]).astype(np.int32)

  def tile_sizes(self) -> np.ndarray:
    """int[T] pixel count of each tile."""
    return np.bincount(self.tile_ids().ravel(), minlength=self.num_tiles)

  def interior_tile_ids(self, margin: int) -> np.ndarray:
    """int32[H, W] like `tile_ids`, but pixels closer than `margin` to their tile's edge get id `num_tiles`.

    A window of `2 * margin + 1` px centred on an interior pixel stays inside the tile, so averaging a
    full-image SSIM map over these pixels equals the SSIM of the tile crop with 'valid' windows.
    """
    ids = self.tile_ids()
    for axis, bounds in ((0, self.row_bounds), (1, self.col_bounds)):
      if margin and int(np.diff(bounds).min()) <= 2 * margin:
        raise ConfigError(f"{self}: tiles of {int(np.diff(bounds).min())} px have no pixel {margin} px inside "
                          f"their edges (a {2 * margin + 1} px window needs tiles of >= {2 * margin + 1} px)")
      pos = np.arange(ids.shape[axis])
      tile = np.searchsorted(bounds, pos, side="right") - 1
      inside = (pos - bounds[tile] >= margin) & (bounds[tile + 1] - 1 - pos >= margin)
      ids = np.where(np.expand_dims(inside, 1 - axis), ids, self.num_tiles)
    return ids.astype(np.int32)


# Which pixels' SSIM a tile's score averages. "image": one full-image map (reflect-padded), every pixel of the
# tile, so windows at tile edges see one pixel of the neighbour. "tile": only pixels whose window lies inside the
# tile, i.e. the SSIM of the tile crop with 'valid' windows, as the authors' code scores each cropped tile.
SSIM_SCOPES: dict[str, Callable[[TileGrid, int], np.ndarray]] = {
    "image": lambda grid, window: grid.tile_ids(),
    "tile": lambda grid, window: grid.interior_tile_ids((window - 1) // 2),
}
# The 3x3 window: uniform, or the authors' pytorch_msssim Gaussian (sigma 1.5: taps 0.31 / 0.38 / 0.31).
SSIM_WINDOWS = {"uniform": False, "gaussian": True}


def ssim_scope_ids(grid: TileGrid, scope: str, window: int = 3) -> np.ndarray:
  if scope not in SSIM_SCOPES:
    raise ConfigError(f"selective.score_scope={scope!r}; expected one of {sorted(SSIM_SCOPES)}")
  return SSIM_SCOPES[scope](grid, window)


def ssim_window_is_gaussian(kind: str) -> bool:
  if kind not in SSIM_WINDOWS:
    raise ConfigError(f"selective.score_window={kind!r}; expected one of {sorted(SSIM_WINDOWS)}")
  return SSIM_WINDOWS[kind]


def _top_k_mask(scores: jax.Array, k: int) -> jax.Array:
  """bool[B, T] marking exactly k highest scores per row (ties go to the lower tile index)."""
  if k == 0:
    return jnp.zeros(scores.shape, bool)
  _, idx = jax.lax.top_k(scores, k)  # [B, k], distinct indices => exactly k per row
  return (idx[..., :, None] == jnp.arange(scores.shape[-1])).any(axis=-2)  # fused compare-reduce, no one-hot


def random_tile_mask(rng: jax.Array, batch: int, num_tiles: int, ratio: float = 0.5) -> jax.Array:
  """bool[batch, num_tiles] uniform random masks with exactly `num_masked_tiles(num_tiles, ratio)` per row."""
  k = num_masked_tiles(num_tiles, ratio)
  return _top_k_mask(jax.random.uniform(rng, (batch, num_tiles)), k)


def pixel_mask(tile_mask: jax.Array, tile_ids: jax.Array) -> jax.Array:
  """bool[B, H, W]: True where the pixel's tile is masked."""
  return jnp.take(jnp.asarray(tile_mask), jnp.asarray(tile_ids), axis=1)


def apply_tile_mask(image: jax.Array, tile_mask: jax.Array, tile_ids: jax.Array, fill_color: Any) -> jax.Array:
  """Fills the masked tiles of image [B, H, W, C] with `fill_color` ([C] or scalar).

  `fill_color` is the dataset mean color in the same space as `image` (zeros for mean/std-normalized images).
  """
  fill = jnp.asarray(fill_color, image.dtype)
  return jnp.where(pixel_mask(tile_mask, tile_ids)[..., None], fill, image)


def per_tile_scores(pred: jax.Array, target: jax.Array, tile_ids: jax.Array, num_tiles: int, *,
                    max_val: float = 1.0, ssim_tile_ids: jax.Array | None = None,
                    gaussian: bool = False) -> jax.Array:
  """float[B, T]: per tile, mean L1 over its pixels + (1 - mean SSIM over its `ssim_tile_ids` pixels).

  Both terms are averaged over channels. SSIM uses a 3x3 window (uniform, or Gaussian sigma 1.5 with
  `gaussian=True`) with reflect padding, so the map is full-size. `ssim_tile_ids` (default `tile_ids`) says
  which pixels' SSIM count for which tile; id `num_tiles` drops a pixel (see `SSIM_SCOPES`). Reduced with
  `jax.ops.segment_sum`, no loop over tiles.
  """
  pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
  b, h, w, _ = pred.shape
  l1_map = jnp.abs(pred - target).mean(-1)
  ssim_px = ssim_map(pred, target, window=3, gaussian=gaussian, max_val=max_val, padding="reflect").mean(-1)

  def tile_mean(values, ids):
    # vmapped over the batch, the scatter keeps B as a batch dimension, so batch-sharded scores stay sharded
    # without an explicit out_sharding (Explicit mesh axes still need `jax.set_mesh` around the call).
    ids = jnp.asarray(ids).reshape(h * w)
    tile_sum = lambda v: jax.ops.segment_sum(v, ids, num_segments=num_tiles + 1)[:num_tiles]
    sums = jax.vmap(tile_sum)(values.reshape(b, h * w))  # [B, T]
    return sums / jnp.maximum(tile_sum(jnp.ones((h * w,), jnp.float32)), 1.0)

  ssim_ids = tile_ids if ssim_tile_ids is None else ssim_tile_ids
  return tile_mean(l1_map, tile_ids) + 1.0 - tile_mean(ssim_px, ssim_ids)


def make_selective_scorer(apply_fn: Callable[[Any, jax.Array], jax.Array], grid: TileGrid, *, num_draws: int = 5,
                          ratio: float = 0.5, fill_color: Any, max_val: float = 1.0,
                          to_score_space: Callable[[jax.Array], jax.Array] | None = None,
                          sequential_draws: bool = False, ssim_window: str = "uniform",
                          ssim_scope: str = "image") -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Builds `score(state, images, rng) -> (tile_mask bool[B, T], mean_scores float[B, T])`.

  For each image: `num_draws` random masks (ratio `ratio`), each reconstructed by `apply_fn(state, masked)`
  (eval mode; same image space as `images`), every tile scored by `per_tile_scores`, the draws averaged, and
  exactly the top `num_masked_tiles(T, ratio)` tiles selected. Pure and jittable. The draws are folded into
  the batch image-major (one `apply_fn` call on B * num_draws images), which keeps batch sharding local;
  `sequential_draws=True` instead runs one batch-sized call per draw with `lax.map`, for 1/num_draws of the
  activation memory. Masks depend only on (rng, batch position): a fixed rng gives fixed masks.
  `to_score_space` maps images and reconstructions to [0, max_val] before scoring (e.g. `x * std + mean` for
  normalized images), because SSIM's luminance term assumes non-negative intensities. `ssim_window`
  (`SSIM_WINDOWS`) and `ssim_scope` (`SSIM_SCOPES`) pick the tile SSIM; the defaults are this library's,
  "gaussian" + "tile" the authors' code.
  With Explicit mesh axes call it inside `jax.set_mesh(mesh)` (segment sums need the mesh to shard outputs).
  """
  if num_draws < 1:
    raise ConfigError(f"num_draws must be >= 1, got {num_draws!r}")
  tile_ids = grid.tile_ids()
  ssim_ids = ssim_scope_ids(grid, ssim_scope)
  gaussian = ssim_window_is_gaussian(ssim_window)
  num_tiles = grid.num_tiles
  k = num_masked_tiles(num_tiles, ratio)

  def score(state: Any, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    if images.shape[1:3] != (grid.height, grid.width):
      raise ValueError(f"scorer built for {grid.height}x{grid.width} crops, got images of shape {images.shape}")
    b = images.shape[0]
    draws = random_tile_mask(rng, b * num_draws, num_tiles, ratio).reshape(b, num_draws, num_tiles)

    def score_draws(imgs, masks):
      # imgs [N, H, W, C] with masks [N, T]: one reconstruction per row, scored against its clean image.
      recon = apply_fn(state, apply_tile_mask(imgs, masks, tile_ids, fill_color))
      if to_score_space is not None:
        recon, imgs = to_score_space(recon), to_score_space(imgs)
      return per_tile_scores(recon, imgs, tile_ids, num_tiles, max_val=max_val, ssim_tile_ids=ssim_ids,
                             gaussian=gaussian)

    if sequential_draws:
      scores = jax.lax.map(lambda m: score_draws(images, m), jnp.swapaxes(draws, 0, 1))  # [D, B, T]
      mean_scores = scores.mean(axis=0)
    else:
      # Image-major [B * D] batch: each shard of the batch axis keeps its own images' draws, so the merge
      # is a local reshape even under Explicit sharding (a draw-major merge, or vmap, would need a reshard).
      reps = jnp.broadcast_to(images[:, None], (b, num_draws) + images.shape[1:])
      flat = reps.reshape((b * num_draws,) + images.shape[1:])
      scores = score_draws(flat, draws.reshape(b * num_draws, num_tiles))
      mean_scores = scores.reshape(b, num_draws, num_tiles).mean(axis=1)
    return _top_k_mask(mean_scores, k), mean_scores

  return score


def save_tile_masks(path: str | os.PathLike, masks_by_id: Mapping[str, Any], grid: TileGrid) -> None:
  """Stores per-image-id tile masks losslessly in one `.npz` (bit-packed), written atomically.

  Atomic (temp file + rename) so an interrupted stage never leaves a half-written file to resume from.
  """
  path = os.fspath(path)
  ids = sorted(masks_by_id)
  t = grid.num_tiles
  rows = []
  for image_id in ids:
    if not isinstance(image_id, str):
      raise ValueError(f"tile mask keys must be str image ids, got {image_id!r}")
    m = np.asarray(masks_by_id[image_id])
    if m.shape != (t,) or not (m.dtype == np.bool_ or np.isin(m, (0, 1)).all()):
      raise ValueError(f"tile mask for id {image_id!r} must be bool[{t}] for {grid}, got {m.dtype}{list(m.shape)}")
    rows.append(np.packbits(m.astype(bool)))
  bits = np.stack(rows) if rows else np.zeros((0, (t + 7) // 8), np.uint8)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp.npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, version=np.int64(_MASK_FILE_VERSION), grid=np.array([grid.height, grid.width, grid.grid]),
               ids=np.array(ids, dtype=np.str_), bits=bits)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_tile_masks(path: str | os.PathLike,
                    expected_grid: TileGrid | None = None) -> tuple[dict[str, np.ndarray], TileGrid]:
  """Reads a `save_tile_masks` file -> ({image_id: bool[T]}, grid).

  Raises DataError naming the file if it is missing, not a mask file, damaged, or (with `expected_grid`)
  made for a different grid.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"tile mask file {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = {"version", "grid", "ids", "bits"} - set(data.files)
      if missing:
        raise DataError(f"tile mask file {path} is not a tile mask file: missing arrays {sorted(missing)}")
      version = int(data["version"])
      grid_arr, ids, bits = data["grid"], data["ids"], data["bits"]
  except DataError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise DataError(f"tile mask file {path} is unreadable or damaged ({type(e).__name__}: {e})") from e
  if version != _MASK_FILE_VERSION:
    raise DataError(f"tile mask file {path} has format version {version}, expected {_MASK_FILE_VERSION}")
  try:
    grid = TileGrid(*(int(v) for v in grid_arr.reshape(-1)))
  except (TypeError, ConfigError) as e:
    raise DataError(f"tile mask file {path} holds an invalid grid {grid_arr.tolist()}: {e}") from e
  t = grid.num_tiles
  if ids.ndim != 1 or bits.shape != (len(ids), (t + 7) // 8) or bits.dtype != np.uint8:
    raise DataError(f"tile mask file {path} is inconsistent: {len(ids)} ids, bits {bits.dtype}{list(bits.shape)}, "
                    f"expected uint8[{len(ids)}, {(t + 7) // 8}] for {t} tiles")
  if expected_grid is not None and grid != expected_grid:
    raise DataError(f"tile mask file {path} was made for {grid}, expected {expected_grid}")
  masks = np.unpackbits(bits, axis=1, count=t).astype(bool)
  return {str(i): masks[n] for n, i in enumerate(ids)}, grid
