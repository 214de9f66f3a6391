"""Per-example numpy transforms for (image, label) pairs.

They run on the host inside grain workers, so they use numpy and PIL only (no JAX) and take an explicit
`np.random.Generator`, which grain's `random_map` derives from (seed, index): augmentation is reproducible and
resumable. Images are uint8 [H, W, 3] until `normalize`; labels are uint8 [H, W] class ids (255 = ignore).
Every function accepts `label=None` so the same code serves unlabeled images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from maskseg_jax.errors import DataError

Array = np.ndarray


def resize(image: Array, label: Array | None, size_hw: Sequence[int]) -> tuple[Array, Array | None]:
  """Resizes to (h, w): bilinear for the image, nearest for the label (ids must not be blended)."""
  h, w = int(size_hw[0]), int(size_hw[1])
  if image.shape[:2] == (h, w):
    return image, label
  image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
  if label is not None:
    label = np.asarray(Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST))
  return image, label


def resize_to_fit(image: Array, label: Array | None, size_hw: Sequence[int]) -> tuple[Array, Array | None]:
  """Downscales (keeping the aspect ratio) only if the image does not fit in (h, w)."""
  h, w = image.shape[:2]
  s = min(size_hw[0] / h, size_hw[1] / w)
  if s >= 1.0:
    return image, label
  new = (max(1, min(size_hw[0], int(round(h * s)))), max(1, min(size_hw[1], int(round(w * s)))))
  return resize(image, label, new)


def random_scale(image: Array, label: Array | None, rng: np.random.Generator,
                 scale_range: Sequence[float]) -> tuple[Array, Array | None]:
  """Rescales both by one factor drawn uniformly from `scale_range` (multi-scale training)."""
  lo, hi = float(scale_range[0]), float(scale_range[1])
  if lo == hi == 1.0:
    return image, label
  s = rng.uniform(lo, hi)
  h, w = image.shape[:2]
  return resize(image, label, (max(1, int(round(h * s))), max(1, int(round(w * s)))))


def pad_to(image: Array, label: Array | None, size_hw: Sequence[int], *, ignore_label: int = 255,
           image_pad: float = 0) -> tuple[Array, Array | None]:
  """Pads bottom/right to exactly (h, w); padded label pixels get `ignore_label` so losses skip them."""
  h, w = image.shape[:2]
  th, tw = int(size_hw[0]), int(size_hw[1])
  if h > th or w > tw:
    raise DataError(f"image of size {h}x{w} does not fit in the pad target {th}x{tw}")
  if (h, w) == (th, tw):
    return image, label
  pads = ((0, th - h), (0, tw - w))
  image = np.pad(image, pads + ((0, 0),) * (image.ndim - 2), constant_values=image_pad)
  if label is not None:
    label = np.pad(label, pads, constant_values=ignore_label)
  return image, label


def random_crop_pad(image: Array, label: Array | None, rng: np.random.Generator, crop_hw: Sequence[int], *,
                    ignore_label: int = 255, image_pad: float = 0) -> tuple[Array, Array | None]:
  """Pads (image 0, label `ignore_label`) up to the crop if smaller, then takes a random (h, w) crop."""
  ch, cw = int(crop_hw[0]), int(crop_hw[1])
  h, w = image.shape[:2]
  image, label = pad_to(image, label, (max(h, ch), max(w, cw)), ignore_label=ignore_label, image_pad=image_pad)
  h, w = image.shape[:2]
  y = int(rng.integers(0, h - ch + 1))
  x = int(rng.integers(0, w - cw + 1))
  image = image[y:y + ch, x:x + cw]
  if label is not None:
    label = label[y:y + ch, x:x + cw]
  return image, label


def random_hflip(image: Array, label: Array | None, rng: np.random.Generator,
                 p: float = 0.5) -> tuple[Array, Array | None]:
  """Mirrors image and label together with probability `p`."""
  if rng.random() < p:
    image = np.ascontiguousarray(image[:, ::-1])
    if label is not None:
      label = np.ascontiguousarray(label[:, ::-1])
  return image, label


def normalize(image: Array, mean: Sequence[float], std: Sequence[float]) -> Array:
  """uint8 -> float32 `(x - mean) / std` per channel (mean/std on the 0..255 scale)."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (image.astype(np.float32) - mean) / std
