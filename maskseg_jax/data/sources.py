"""Random-access segmentation sources (grain's `RandomAccessDataSource` protocol: `len`, `[i]`).

`source[i] -> {"image": uint8[H, W, 3], "label": uint8[H, W], "id": str}`; every source also has
`num_classes`, `class_names` and `ignore_label`. File-backed sources resolve their file list when built (cheap,
no decoding), `validate_source` checks every file exists and decodes a sample before training, and every
read re-checks shapes and label range, so a bad file met late in training still fails with its name instead
of a silent wrong loss. `build_source(config.data, split)` picks the reader by `data.name` from `SOURCES`.
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from maskseg_jax.errors import ConfigError, DataError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car", "pedestrian",
    "bicyclist")

REPO_ROOT = Path(__file__).resolve().parents[2]
CAMVID_DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "data" / "camvid"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_VOC_LAYOUT = "expected JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/ (PASCAL VOC 2012 layout)"
_CITYSCAPES_LAYOUT = ("expected leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
                      "gtFine/<split>/<city>/*_gtFine_labelTrainIds.png (Cityscapes layout)")
_FOLDER_LAYOUT = ("expected images/ (.jpg/.jpeg/.png) and labels/ (.png class ids) with matching file stems, "
                  "optionally split into images/<split>/ and labels/<split>/")


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


def subset(source: Source, indices: Sequence[int]) -> SubsetSource:
  return SubsetSource(source, indices)


# ------------------------------------------------------------------------------------------ split files

def _looks_like_path(split: str) -> bool:
  return os.sep in split or "/" in split or split.endswith((".txt", ".lst"))


def resolve_split_file(split: str, root: str, dataset: str) -> str | None:
  """A split that looks like a path (has a '/' or ends in .txt): absolute, else relative to the working
  directory, else to the root. None for a plain split name such as `train`."""
  if not _looks_like_path(split):
    return None
  candidates = [split] if os.path.isabs(split) else [split, os.path.join(root, split)]
  for c in candidates:
    if os.path.isfile(c):
      return c
  raise DataError(f"{dataset} split file {split} not found (looked at {', '.join(candidates)}); expected "
                  "a text file listing `image_path label_path` pairs or names, one per line")


def _root_path(root: str, rel: str) -> str:
  """Split files list paths relative to the root, often with a leading slash (UniMatch/CPS style)."""
  p = os.path.join(root, rel.lstrip("/"))
  if not os.path.exists(p) and os.path.isabs(rel) and os.path.exists(rel):
    return rel
  return p


def read_split_file(path: str) -> list[list[str]]:
  """Non-empty lines of a split file, split on whitespace: [name] or [image_path, label_path]."""
  try:
    with open(path) as f:
      rows = [line.split() for line in f]
  except OSError as e:
    raise DataError(f"split file {path} could not be read ({e})") from e
  rows = [r for r in rows if r and not r[0].startswith("#")]
  for n, r in enumerate(rows):
    if len(r) > 2:
      raise DataError(f"split file {path} line {n + 1} has {len(r)} fields {r}; expected `name` or "
                      "`image_path label_path`")
  if not rows:
    raise DataError(f"split file {path} lists no images; expected `image_path label_path` pairs or names")
  return rows


def _stem_id(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _pairs_to_items(rows: list[list[str]], root: str, path: str) -> list[tuple[str, str, str]]:
  items = []
  for r in rows:
    if len(r) != 2:
      raise DataError(f"split file {path} mixes names and `image_path label_path` pairs (line {r}); "
                      "expected one format per file")
    items.append((_root_path(root, r[0]), _root_path(root, r[1]), _stem_id(r[0])))
  return items


# ------------------------------------------------------------------------------------------ VOC / CamVid

class VOCSource(FileSource):
  """PASCAL VOC 2012 folder layout (also used by CamVid and any dataset packed that way).

  `split` is an ImageSets/Segmentation name (`train`), or a split file listing names or
  `image_path label_path` pairs relative to the root. Labels come from SegmentationClass (palette indices)
  with a fallback to SegmentationClassAug for names missing there, or only from `label_dir` if given.
  """

  name = "voc"
  layout = "VOC"

  def __init__(self, root: str | os.PathLike, split: str = "train", *, label_dir: str = "",
               num_classes: int = 21, class_names: Sequence[str] | None = VOC_CLASSES, ignore_label: int = 255):
    root = str(root)
    if not os.path.isdir(root):
      raise DataError(f"{self.layout} root {root} not found: {_VOC_LAYOUT}. Put the dataset there or set "
                      "data.root")
    label_dirs = [label_dir] if label_dir else ["SegmentationClass", "SegmentationClassAug"]
    present = [d for d in label_dirs if os.path.isdir(os.path.join(root, d))]
    split_path = resolve_split_file(split, root, self.layout)
    if split_path is None:
      split_path = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
      if not os.path.isfile(split_path):
        sets = os.path.join(root, "ImageSets", "Segmentation")
        known = sorted(_stem_id(f) for f in os.listdir(sets) if f.endswith(".txt")) if os.path.isdir(sets) else []
        raise DataError(f"{self.layout} split file {split_path} not found (split {split!r}; available: "
                        f"{known or 'none'}); {_VOC_LAYOUT}, or give data.*_split as a path to a split file")
    rows = read_split_file(split_path)
    if all(len(r) == 2 for r in rows):
      items = _pairs_to_items(rows, root, split_path)
    else:
      if not os.path.isdir(os.path.join(root, "JPEGImages")):
        raise DataError(f"{self.layout} root {root} has no JPEGImages/ folder: {_VOC_LAYOUT}")
      if not present:
        raise DataError(f"{self.layout} root {root} has no label folder ({' or '.join(label_dirs)}/): "
                        f"{_VOC_LAYOUT}")
      listed = {d: set(os.listdir(os.path.join(root, d))) for d in present}
      items = []
      for r in rows:
        if len(r) != 1:
          raise DataError(f"split file {split_path} mixes names and `image_path label_path` pairs (line {r}); "
                          "expected one format per file")
        name = r[0]
        label_folder = next((d for d in present if f"{name}.png" in listed[d]), present[-1])
        items.append((os.path.join(root, "JPEGImages", f"{name}.jpg"),
                      os.path.join(root, label_folder, f"{name}.png"), name))
    self.split = split
    super().__init__(root, items, num_classes=num_classes, class_names=class_names, ignore_label=ignore_label,
                     where=split_path)

  @classmethod
  def from_config(cls, data_config, split: str) -> VOCSource:
    return cls(data_config.root, split, label_dir=data_config.get("label_dir", ""),
               ignore_label=data_config.ignore_label)


class CamVidSource(VOCSource):
  """CamVid, 11 classes, in the VOC layout (grayscale labels); defaults to ../shared/data/camvid."""

  name = "camvid"
  layout = "CamVid (VOC-layout)"

  def __init__(self, root: str | os.PathLike = "", split: str = "train", *, label_dir: str = "",
               ignore_label: int = 255):
    super().__init__(root or CAMVID_DEFAULT_ROOT, split, label_dir=label_dir, num_classes=len(CAMVID_CLASSES),
                     class_names=CAMVID_CLASSES, ignore_label=ignore_label)


# ------------------------------------------------------------------------------------------ Cityscapes

class CityscapesSource(FileSource):
  """Cityscapes fine annotations as train ids (`*_gtFine_labelTrainIds.png`, 19 classes, 255 ignore)."""

  name = "cityscapes"
  missing_hint = (" (the *_labelTrainIds.png files are made by cityscapesscripts' "
                  "preparation/createTrainIdLabelImgs.py)")

  def __init__(self, root: str | os.PathLike, split: str = "train", *, ignore_label: int = 255):
    root = str(root)
    if not os.path.isdir(root):
      raise DataError(f"Cityscapes root {root} not found: {_CITYSCAPES_LAYOUT}. Put the dataset there or set "
                      "data.root")
    split_path = resolve_split_file(split, root, "Cityscapes")
    if split_path is not None:
      items = _pairs_to_items(read_split_file(split_path), root, split_path)
      where = split_path
    else:
      image_dir = os.path.join(root, "leftImg8bit", split)
      if not os.path.isdir(image_dir):
        base = os.path.join(root, "leftImg8bit")
        known = sorted(os.listdir(base)) if os.path.isdir(base) else []
        raise DataError(f"Cityscapes split folder {image_dir} not found (available: {known or 'none'}); "
                        f"{_CITYSCAPES_LAYOUT}")
      items = []
      for city in sorted(os.listdir(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not os.path.isdir(city_dir):
          continue
        for f in sorted(os.listdir(city_dir)):
          if f.endswith("_leftImg8bit.png"):
            stem = f[:-len("_leftImg8bit.png")]
            items.append((os.path.join(city_dir, f),
                          os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelTrainIds.png"), stem))
      where = image_dir
    self.split = split
    super().__init__(root, items, num_classes=19, class_names=CITYSCAPES_CLASSES, ignore_label=ignore_label,
                     where=where)

  @classmethod
  def from_config(cls, data_config, split: str) -> CityscapesSource:
    return cls(data_config.root, split, ignore_label=data_config.ignore_label)


# ------------------------------------------------------------------------------------------ folder pairs

class FolderSource(FileSource):
  """`images/` + `labels/` with matching stems (optionally `images/<split>/`, `labels/<split>/`)."""

  name = "folder"

  def __init__(self, root: str | os.PathLike, split: str = "", *, num_classes: int,
               class_names: Sequence[str] | None = None, ignore_label: int = 255):
    root = str(root)
    if not os.path.isdir(root):
      raise DataError(f"folder dataset root {root} not found: {_FOLDER_LAYOUT}")
    split_path = resolve_split_file(split, root, "folder") if split else None
    if split_path is not None:
      rows = read_split_file(split_path)
      if all(len(r) == 2 for r in rows):
        items = _pairs_to_items(rows, root, split_path)
      else:
        items = [self._pair(root, "images", "labels", r[0]) for r in rows]
      where = split_path
    else:
      image_dir, label_dir = os.path.join(root, "images"), os.path.join(root, "labels")
      for d in (image_dir, label_dir):
        if not os.path.isdir(d):
          raise DataError(f"folder dataset root {root} has no {os.path.basename(d)}/ folder: {_FOLDER_LAYOUT}")
      subdirs = sorted(d for d in os.listdir(image_dir) if os.path.isdir(os.path.join(image_dir, d)))
      if split and os.path.isdir(os.path.join(image_dir, split)):
        image_dir, label_dir = os.path.join(image_dir, split), os.path.join(label_dir, split)
        if not os.path.isdir(label_dir):
          raise DataError(f"folder dataset has {image_dir} but no {label_dir}: {_FOLDER_LAYOUT}")
      elif split and subdirs:
        raise DataError(f"folder dataset {root} has no images/{split}/ (split subfolders: {subdirs}); "
                        f"{_FOLDER_LAYOUT}")
      images = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTS))
      labels = {_stem_id(f) for f in os.listdir(label_dir) if f.lower().endswith(".png")}
      unmatched = [f for f in images if _stem_id(f) not in labels]
      if unmatched:
        raise DataError(f"{len(unmatched)} images in {image_dir} have no label <stem>.png in {label_dir}, e.g. "
                        f"{unmatched[:5]}; {_FOLDER_LAYOUT}")
      items = [(os.path.join(image_dir, f), os.path.join(label_dir, _stem_id(f) + ".png"), _stem_id(f))
               for f in images]
      where = image_dir
    self.split = split
    super().__init__(root, items, num_classes=num_classes, class_names=class_names, ignore_label=ignore_label,
                     where=where)

  @staticmethod
  def _pair(root: str, image_sub: str, label_sub: str, name: str) -> tuple[str, str, str]:
    image = next((os.path.join(root, image_sub, name + e) for e in IMAGE_EXTS
                  if os.path.isfile(os.path.join(root, image_sub, name + e))),
                 os.path.join(root, image_sub, name + ".jpg"))
    return image, os.path.join(root, label_sub, name + ".png"), name

  @classmethod
  def from_config(cls, data_config, split: str) -> FolderSource:
    return cls(data_config.root, split, num_classes=data_config.num_classes,
               ignore_label=data_config.ignore_label)




from maskseg_jax.data.synthetic import SyntheticSource  # noqa: E402  (subclasses Source above)
from maskseg_jax.data.tfds_source import TFDSSource  # noqa: E402

SOURCES: dict[str, type] = {
    "voc": VOCSource,
    "camvid": CamVidSource,
    "cityscapes": CityscapesSource,
    "folder": FolderSource,
    "synthetic": SyntheticSource,
    "tfds": TFDSSource,
}

_SLICE = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def build_source(data_config, split: str) -> Source:
  """The source `data.name` for `split` (a split name or file; `name[a:b]` takes a slice of it)."""
  name = data_config.name
  if name not in SOURCES:
    raise ConfigError(f"unknown data.name {name!r}; known: {sorted(SOURCES)}")
  if not 0 <= int(data_config.ignore_label) <= 255:
    raise ConfigError(f"data.ignore_label={data_config.ignore_label} must fit in uint8 labels (0..255)")
  m = _SLICE.match(split)
  base = m.group("base") if m else split
  source = SOURCES[name].from_config(data_config, base)
  if source.num_classes != data_config.num_classes:
    raise ConfigError(f"data.num_classes={data_config.num_classes} but {name} has {source.num_classes} "
                      f"classes; set --config.data.num_classes={source.num_classes}")
  if m:
    start = int(m.group("start")) if m.group("start") else None
    stop = int(m.group("stop")) if m.group("stop") else None
    source = SubsetSource(source, range(len(source))[start:stop])
  scale = float(data_config.get("image_scale", 1.0))
  if scale != 1.0:
    from maskseg_jax.data.views import ScaledSource
    source = ScaledSource(source, scale)
  return source


def validate_source(source: Source, max_items: int = 64) -> int:
  """Fails early with the file at fault: every listed file must exist; up to `max_items` (-1: all) items are
  fully decoded and checked, spread evenly over the split. Returns the number of items decoded."""
  n = len(source)
  if n == 0:
    raise DataError(f"{source!r} is empty; expected at least one item")
  missing = source.check_files()
  if missing:
    hint = getattr(source, "missing_hint", "")
    raise DataError(f"{len(missing)} files listed by {source!r} do not exist{hint}, e.g. {missing[:5]}")
  k = n if max_items < 0 else min(n, int(max_items))
  indices = np.unique(np.linspace(0, n - 1, k).round().astype(int)) if k > 0 else []
  for i in indices:
    source[int(i)]
  return len(indices)
