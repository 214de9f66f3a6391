"""The file layouts a `FileSource` reads: VOC (and CamVid packed that way), Cityscapes and a plain folder.

Each layout resolves its (image, label, id) list when built, from a split name (`ImageSets/Segmentation/train.txt`,
`leftImg8bit/<split>/`, `images/<split>/`) or a split file listing names or `image_path label_path` pairs, and
says which files it expected when they are not there. Reading and checking are `sources.FileSource`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from maskseg_jax.data.source_base import FileSource
from maskseg_jax.errors import DataError

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




