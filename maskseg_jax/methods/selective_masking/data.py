"""Selective-masking data: the stage plan (partitions), per-image tile masks and the reconstruction pipeline.

Masks live in each image's *canonical view*: the whole image resized to `data.crop_size`, on which the static
tile grid is laid. Scoring sees exactly this view, so a stored mask names tiles of a known picture. Training
then augments jointly: the canonical image and its pixel mask take the same random resized crop (resized back
to the crop size; the mask by nearest neighbour) and the same horizontal flip, so a masked tile stays glued to
the image content it hides (it is scaled with it, no longer on the grid). Colour jitter touches the input
only; the target is the un-jittered crop, as in the authors' setup. Masked pixels are filled with 0 in the
normalized space, i.e. with `data.mean` (set it to the dataset's mean colour), inside the train step.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import grain
import numpy as np

from maskseg_jax.data import transforms as T
from maskseg_jax.data.strong_augment import color_jitter
from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.methods.selective_masking.config import STRATEGIES
from maskseg_jax.methods.selective_masking.tiles import TileGrid, num_masked_tiles


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
  """One pretraining stage: which images it trains and validates on, for how long, and with which masks."""
  index: int
  train: np.ndarray            # indices into the pretraining source
  val: np.ndarray
  steps: int
  selective: bool              # True: fixed masks scored by the previous stage's model; False: fresh random

  @property
  def images(self) -> np.ndarray:
    """Every image of the stage (train and val) in source order: what the scoring pass covers."""
    return np.sort(np.concatenate([self.train, self.val]))


def partition_indices(n: int, num_partitions: int) -> list[np.ndarray]:
  """P_k = D[k::num_partitions]: disjoint, covering, and each spread over the whole (often ordered) set."""
  return [np.arange(k, n, num_partitions) for k in range(num_partitions)]


def train_val_split(indices: np.ndarray, val_every: int) -> tuple[np.ndarray, np.ndarray]:
  """Every `val_every`-th image (positions val_every-1, 2*val_every-1, ...) validates; at least one does."""
  indices = np.asarray(indices)
  if len(indices) < 2:
    raise DataError(f"a pretraining partition has {len(indices)} images; need at least 2 (train and val)")
  is_val = (np.arange(len(indices)) % val_every) == val_every - 1
  if not is_val.any():
    is_val[-1] = True
  return indices[~is_val], indices[is_val]


def stage_plan(num_images: int, sel) -> list[Stage]:
  """The stages of a pretraining run on `num_images` images, from the `selective` config section.

  `selective`: P_0 with random masks, then P_k with masks scored by stage k-1. `random_stages`: the same
  stages with random masks. `random`: the authors' baseline, one stage on the whole set with the same total
  number of steps (num_partitions * steps_per_stage).
  """
  if sel.strategy not in STRATEGIES:
    raise ConfigError(f"selective.strategy={sel.strategy!r}; expected one of {list(STRATEGIES)}")
  k, steps = int(sel.num_partitions), int(sel.steps_per_stage)
  if k < 1 or steps < 1 or int(sel.val_every) < 2:
    raise ConfigError(f"selective.num_partitions={k}, steps_per_stage={steps}, val_every={sel.val_every}; expected "
                      "num_partitions >= 1, steps_per_stage >= 1 and val_every >= 2")
  if sel.strategy == "random":
    train, val = train_val_split(np.arange(num_images), int(sel.val_every))
    return [Stage(0, train, val, k * steps, False)]
  if num_images < 2 * k:
    raise DataError(f"{num_images} pretraining images cannot fill {k} partitions of at least 2; lower "
                    "selective.num_partitions")
  stages = []
  for i, part in enumerate(partition_indices(num_images, k)):
    train, val = train_val_split(part, int(sel.val_every))
    stages.append(Stage(i, train, val, steps, sel.strategy == "selective" and i > 0))
  return stages


def tile_grid(data_config, sel) -> TileGrid:
  h, w = (int(s) for s in data_config.crop_size)
  return TileGrid(h, w, int(sel.grid))


def canonical_view(image: np.ndarray, crop_hw) -> np.ndarray:
  """The whole image resized to the crop size: the frame the tile grid and the stored masks refer to."""
  return T.resize(image, None, crop_hw)[0]


def random_tile_mask(rng: np.random.Generator, num_tiles: int, ratio: float) -> np.ndarray:
  """bool[T] with exactly `num_masked_tiles(T, ratio)` tiles set, uniformly at random."""
  mask = np.zeros(num_tiles, bool)
  mask[rng.choice(num_tiles, num_masked_tiles(num_tiles, ratio), replace=False)] = True
  return mask


def fixed_random_masks(ids, num_tiles: int, ratio: float, seed: int) -> dict[str, np.ndarray]:
  """One reproducible random mask per image id (validation of random-mask stages compares like with like)."""
  return {i: random_tile_mask(np.random.default_rng([seed, zlib.crc32(i.encode())]), num_tiles, ratio)
          for i in ids}


def random_resized_box(rng: np.random.Generator, h: int, w: int, scale, ratio) -> tuple[int, int, int, int]:
  """(y, x, height, width) of a random crop with area in `scale` of h*w and aspect w/h in `ratio` (log-uniform),
  torchvision's RandomResizedCrop rule: 10 tries, then the largest centred box within the ratio range."""
  area = h * w
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  in_ratio = w / h
  if in_ratio < min(ratio):
    cw, ch = w, int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    ch, cw = h, int(round(h * max(ratio)))
  else:
    ch, cw = h, w
  return (h - ch) // 2, (w - cw) // 2, ch, cw


class ReconstructionTransform:
  """Source item -> {"image": jittered input, "target": clean crop (both normalized f32), "mask": bool[h, w]}.

  `masks` ({image id: bool[T]}) gives fixed per-image masks (selective stages); None draws a fresh random
  mask per sample and step from the example's rng. A class so it pickles into grain workers.
  """

  def __init__(self, data_config, sel, grid: TileGrid, masks: dict[str, np.ndarray] | None = None,
               mask_source: str = ""):
    self.crop = (grid.height, grid.width)
    self.tile_ids = grid.tile_ids()
    self.num_tiles = grid.num_tiles
    self.ratio = float(sel.mask_ratio)
    self.masks, self.mask_source = masks, mask_source
    self.scale = tuple(float(s) for s in sel.crop_scale)
    self.aspect = tuple(float(r) for r in sel.crop_ratio)
    self.hflip = bool(data_config.hflip)
    self.jitter = tuple(float(j) for j in sel.jitter)
    self.jitter_p = float(sel.jitter_p)
    self.mean = tuple(float(m) for m in data_config.mean)
    self.std = tuple(float(s) for s in data_config.std)

  def tile_mask(self, image_id: str, rng: np.random.Generator) -> np.ndarray:
    if self.masks is None:
      return random_tile_mask(rng, self.num_tiles, self.ratio)
    if image_id not in self.masks:
      raise DataError(f"image {image_id!r} has no tile mask in {self.mask_source or 'the stage masks'}; delete the "
                      "file to rescore the stage")
    return self.masks[image_id]

  def __call__(self, example: dict, rng: np.random.Generator) -> dict:
    image = canonical_view(example["image"], self.crop)
    pmask = self.tile_mask(str(example["id"]), rng)[self.tile_ids].astype(np.uint8)
    if self.scale != (1.0, 1.0):
      y, x, ch, cw = random_resized_box(rng, self.crop[0], self.crop[1], self.scale, self.aspect)
      image, pmask = T.resize(image[y:y + ch, x:x + cw], pmask[y:y + ch, x:x + cw], self.crop)
    if self.hflip:
      image, pmask = T.random_hflip(image, pmask, rng)
    jittered = image
    if rng.random() < self.jitter_p:
      jittered = color_jitter(image, rng, *self.jitter)
    return {"image": T.normalize(jittered, self.mean, self.std), "target": T.normalize(image, self.mean, self.std),
            "mask": pmask.astype(bool)}


class _CanonicalMap:
  """Local position j -> the canonical view of global item i*B + p*b + j%b (batch i), or padding past the end."""

  def __init__(self, source, data_config, crop, n: int, global_batch: int, process_index: int, local_batch: int):
    self.source, self.crop, self.n = source, tuple(crop), n
    self.gb, self.p, self.lb = global_batch, process_index, local_batch
    self.mean = tuple(float(m) for m in data_config.mean)
    self.std = tuple(float(s) for s in data_config.std)

  def __call__(self, j: int) -> dict:
    g = (j // self.lb) * self.gb + self.p * self.lb + j % self.lb
    if g >= self.n:
      raw = np.zeros(self.crop + (3,), np.uint8)
      return {"image": np.zeros(self.crop + (3,), np.float32), "raw_image": raw, "valid": np.bool_(False),
              "index": np.int64(-1)}
    raw = canonical_view(self.source[g]["image"], self.crop)
    return {"image": T.normalize(raw, self.mean, self.std), "raw_image": raw, "valid": np.bool_(True),
            "index": np.int64(g)}


def canonical_batches(source, data_config, crop, global_batch: int, *, process_index: int = 0,
                      process_count: int = 1):
  """Process-local batches of canonical views, in source order: global batch i holds items [i*B, (i+1)*B) and
  process p its rows [p*b, (p+1)*b), as a batch-sharded global array lays them out. Keys: "image" (normalized),
  "raw_image" (uint8), "valid" (False for padding), "index" (source index, -1 for padding)."""
  if global_batch % process_count:
    raise ConfigError(f"batch size {global_batch} is not divisible by the {process_count} processes")
  local = global_batch // process_count
  n = len(source)
  num_batches = math.ceil(n / global_batch)
  threads = int(data_config.get("read_threads", 2))
  ds = grain.MapDataset.source(range(num_batches * local))
  ds = ds.map(_CanonicalMap(source, data_config, crop, n, global_batch, process_index, local))
  options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * local if threads > 0 else 0)
  return iter(ds.to_iter_dataset(options).batch(local))
