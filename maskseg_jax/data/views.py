"""Read-only views of a source that change every item the same way (fixed rescale, fixed resize), or keep it.

A view keeps the source's `num_classes`, `class_names` and ids, so evaluators and pictures stay correct.
Images are resized bilinearly, labels by nearest neighbour (class ids are never blended).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_pair(image: np.ndarray, label: np.ndarray, size_hw) -> tuple[np.ndarray, np.ndarray]:
  h, w = int(size_hw[0]), int(size_hw[1])
  if image.shape[:2] == (h, w):
    return image, label
  img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
  lab = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
  return img, lab


class _View:

  def __init__(self, source):
    self.source = source
    self.num_classes = source.num_classes
    self.class_names = getattr(source, "class_names", None)

  def __len__(self) -> int:
    return len(self.source)

  def __getattr__(self, name):  # paths, roots and other attributes of the wrapped source
    return getattr(self.source, name)

  def __getitem__(self, index):
    item = dict(self.source[index])
    item["image"], item["label"] = resize_pair(item["image"], item["label"], self.size_of(item["image"]))
    return item


class ScaledSource(_View):
  """Every item rescaled by a fixed factor (e.g. 0.25 turns CamVid's 360x480 into 90x120)."""

  def __init__(self, source, scale: float):
    super().__init__(source)
    self.scale = float(scale)

  def size_of(self, image):
    return (max(1, round(image.shape[0] * self.scale)), max(1, round(image.shape[1] * self.scale)))


class ResizedSource(_View):
  """Every item resized to one (h, w) (L-MAE's fixed model input)."""

  def __init__(self, source, size_hw):
    super().__init__(source)
    self.size = tuple(int(s) for s in size_hw)

  def size_of(self, image):
    return self.size


class CachedSource(_View):
  """Every item kept in memory after its first read (`data.cache_items`): a small rescaled split (CamVid at
  1/4 scale is 16 MB) is then decoded once, not once per epoch, and the reader threads stop taking CPU from the
  train step. Items are returned as read-only arrays, so an augmentation cannot change the cached copy."""

  def __init__(self, source):
    super().__init__(source)
    self._items: dict[int, dict] = {}

  def __getitem__(self, index):
    index = int(index)
    item = self._items.get(index)
    if item is None:
      item = dict(self.source[index])
      for value in item.values():
        if isinstance(value, np.ndarray):
          value.flags.writeable = False
      self._items[index] = item
    return dict(item)
