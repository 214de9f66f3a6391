"""What every segmentation source is: the decoders, the per-item check, and the `Source` base classes.

`read_image` / `read_label` decode one file with a one-line error naming it; `check_example` re-checks shapes
and label range on every read; `Source` is grain's random-access protocol plus `num_classes`, `class_names`,
`ignore_label`; `FileSource` reads (image, label) file pairs; `SubsetSource` is a view of some items. The
readers themselves live in `file_layouts.py`, `synthetic.py` and `tfds_source.py`; `sources.py` picks one.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from maskseg_jax.errors import ConfigError, DataError

# ----------------------------------------------------------------------------------------------- decoding

def _gray16_to_rgb(im: Image.Image) -> np.ndarray:
  """16-bit grayscale (PNG 'I;16*', or 'I' holding 0..65535) to uint8 RGB by v / 257, the full-range scaling
  Pillow itself applies to 16-bit RGB PNGs. `convert('RGB')` would clip every value above 255 to white."""
  arr = np.asarray(im).astype(np.int64)
  if arr.size and (arr.min() < 0 or arr.max() > 65535):
    raise ValueError(f"pixel mode {im.mode!r} with values {int(arr.min())}..{int(arr.max())} outside 16 bits")
  gray = np.round(arr / 257.0).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


def _refuse_float(im: Image.Image) -> np.ndarray:
  raise ValueError(f"pixel mode {im.mode!r} (floating point) has no fixed 0..255 scale; save it as an 8- or "
                   "16-bit image")


# Pixel modes `convert('RGB')` gets wrong; every other mode (L, P, RGB, RGBA, LA, CMYK, 1, 16-bit RGB PNGs,
# which Pillow opens as RGB) converts correctly.
_IMAGE_DECODERS = {"I;16": _gray16_to_rgb, "I;16L": _gray16_to_rgb, "I;16B": _gray16_to_rgb,
                   "I;16N": _gray16_to_rgb, "I": _gray16_to_rgb, "F": _refuse_float}


def read_image(path: str | os.PathLike) -> np.ndarray:
  """Decodes an image file to uint8 RGB [H, W, 3]; any failure becomes a DataError naming the file."""
  try:
    with Image.open(path) as im:
      decode = _IMAGE_DECODERS.get(im.mode)
      arr = decode(im) if decode else np.asarray(im.convert("RGB"))
  except FileNotFoundError:
    raise DataError(f"image file {path} not found") from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"image file {path} could not be decoded ({e}); expected a readable JPEG or PNG (8- or "
                    "16-bit)") from e
  return arr


def read_label(path: str | os.PathLike) -> np.ndarray:
  """Decodes a label PNG to uint8 class ids [H, W].

  Palette ('P') PNGs such as VOC's SegmentationClass hold class ids as palette indices, so the indices are
  read, never the colours; grayscale ('L') PNGs hold ids directly. Colour or 16-bit labels are rejected
  rather than guessed at.
  """
  try:
    with Image.open(path) as im:
      mode = im.mode
      if mode in ("P", "L"):
        arr = np.asarray(im)
      elif mode == "1":
        arr = np.asarray(im).astype(np.uint8)
      else:
        arr = None
  except FileNotFoundError:
    raise DataError(f"label file {path} not found") from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"label file {path} could not be decoded ({e}); expected a readable PNG") from e
  if arr is None:
    raise DataError(
        f"label file {path} has pixel mode {mode!r}; expected class ids in an 8-bit palette ('P') or "
        "grayscale ('L') PNG (convert colour-coded or 16-bit labels to 8-bit class ids first)")
  return arr


def check_example(image: Any, label: Any, num_classes: int, ignore_label: int, where: str) -> None:
  """Raises DataError unless image is uint8 [H,W,3], label uint8 [H,W] of the same size with valid ids."""
  if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
    raise DataError(f"image of {where} is {desc}; expected uint8 [H, W, 3]")
  if not isinstance(label, np.ndarray) or label.ndim != 2:
    desc = f"shape {label.shape}" if isinstance(label, np.ndarray) else type(label).__name__
    raise DataError(f"label of {where} has {desc}; expected a 2-D [H, W] array of class ids")
  if label.dtype != np.uint8:
    raise DataError(f"label of {where} has dtype {label.dtype}; expected uint8 class ids")
  if label.shape != image.shape[:2]:
    raise DataError(f"label of {where} is {label.shape[0]}x{label.shape[1]} but the image is "
                    f"{image.shape[0]}x{image.shape[1]}; expected the same height and width")
  bad = (label >= num_classes) & (label != ignore_label)
  if bad.any():
    values = np.unique(label[bad])
    raise DataError(
        f"label of {where} has values {values[:10].tolist()} outside 0..{num_classes - 1} and {ignore_label} "
        f"(ignore); expected {num_classes} class ids (wrong data.num_classes, or a colour-coded label?)")


# ------------------------------------------------------------------------------------------ base classes

class Source(abc.ABC):
  """Common interface; subclasses set num_classes/class_names and implement `__len__` and `_load(i)`."""

  name = "source"
  num_classes: int
  class_names: tuple[str, ...]
  ignore_label: int = 255

  @abc.abstractmethod
  def __len__(self) -> int:
    """Number of items."""

  @abc.abstractmethod
  def _load(self, index: int) -> dict[str, Any]:
    """Item `index` (already range-checked) as {"image", "label", "id"}."""

  def _index(self, index: int) -> int:
    n = len(self)
    index = int(index)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f"{self.name} index {index} out of range for {n} items")
    return index

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = self._index(index)
    ex = self._load(index)
    check_example(ex["image"], ex["label"], self.num_classes, self.ignore_label, self.describe(index))
    return ex

  def id_of(self, index: int) -> str:
    """The item's id without decoding it (eval keeps ids on the host)."""
    return self[index]["id"]

  def describe(self, index: int) -> str:
    """How error messages name item `index` (file paths where there are files)."""
    return f"{self.name} item {index}"

  def check_files(self, indices: Sequence[int] | None = None) -> list[str]:
    """Paths the source lists (for `indices`, default all) that do not exist; file-backed sources only."""
    return []

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.name}, {len(self)} items, {self.num_classes} classes)"


class FileSource(Source):
  """A list of (image path, label path, id) triples read with PIL."""

  missing_hint = ""

  def __init__(self, root: str | os.PathLike, items: Sequence[tuple[str, str, str]], *, num_classes: int,
               class_names: Sequence[str] | None = None, ignore_label: int = 255, where: str = ""):
    self.root = str(root)
    self.items = list(items)
    self.num_classes = int(num_classes)
    self.class_names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
    if len(self.class_names) != self.num_classes:
      raise ConfigError(f"{len(self.class_names)} class names given for {self.num_classes} classes")
    self.ignore_label = int(ignore_label)
    if not self.items:
      raise DataError(f"{self.name} split {where or self.root} lists no images; expected at least one")

  def __len__(self) -> int:
    return len(self.items)

  def _load(self, index: int) -> dict[str, Any]:
    image_path, label_path, item_id = self.items[index]
    return {"image": read_image(image_path), "label": read_label(label_path), "id": item_id}

  def id_of(self, index: int) -> str:
    return self.items[self._index(index)][2]

  def describe(self, index: int) -> str:
    image_path, label_path, item_id = self.items[index]
    return f"item {item_id} ({image_path}, {label_path})"

  def check_files(self, indices: Sequence[int] | None = None) -> list[str]:
    items = self.items if indices is None else [self.items[i] for i in indices]
    return [p for image_path, label_path, _ in items for p in (image_path, label_path) if not os.path.isfile(p)]

  def relative_pairs(self) -> list[tuple[str, str]]:
    """(image, label) paths relative to the root, as split files list them."""
    return [(os.path.relpath(i, self.root), os.path.relpath(lb, self.root)) for i, lb, _ in self.items]


class SubsetSource(Source):
  """A view of some items of another source (e.g. the labeled part of a split)."""

  def __init__(self, source: Source, indices: Sequence[int]):
    self.source = source
    self.indices = [int(i) for i in indices]
    self.name = source.name
    self.num_classes = source.num_classes
    self.class_names = source.class_names
    self.ignore_label = source.ignore_label
    if not self.indices:
      raise DataError(f"subset of {source!r} is empty; expected at least one item")

  def __len__(self) -> int:
    return len(self.indices)

  def _load(self, index: int) -> dict[str, Any]:
    return self.source[self.indices[index]]

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._load(self._index(index))

  def id_of(self, index: int) -> str:
    return self.source.id_of(self.indices[self._index(index)])

  def describe(self, index: int) -> str:
    return self.source.describe(self.indices[index])

  def check_files(self, indices: Sequence[int] | None = None) -> list[str]:
    mine = self.indices if indices is None else [self.indices[i] for i in indices]
    if isinstance(self.source, FileSource | SubsetSource):
      return self.source.check_files(mine)
    return []

  def relative_pairs(self) -> list[tuple[str, str]]:
    """The inner file-backed source's (image, label) relative paths of these items (split files list them)."""
    if not isinstance(self.source, FileSource | SubsetSource):
      raise DataError(f"{self.source!r} is not file-backed; split files list image and label paths")
    pairs = self.source.relative_pairs()
    return [pairs[i] for i in self.indices]


def subset(source: Source, indices: Sequence[int]) -> SubsetSource:
  return SubsetSource(source, indices)


