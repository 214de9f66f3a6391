"""Tiny datasets written in the exact standard folder layouts (VOC, Cityscapes, images/labels pairs).

Tests of any module import these instead of needing real datasets. Images are coloured by class (plus noise)
so a model can learn something; labels are lossless PNGs and are returned so tests can compare read-back ids.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from PIL import Image


def voc_palette() -> list[int]:
  """The PASCAL VOC colour map (bit-interleaved class ids), flat [r0, g0, b0, r1, ...] for 256 entries."""
  pal = []
  for i in range(256):
    r = g = b = 0
    c = i
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    pal += [r, g, b]
  return pal


def random_scene(rng: np.random.Generator, size: tuple[int, int], num_classes: int,
                 border: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(image uint8 [H,W,3], label uint8 [H,W]): a few class rectangles, optionally a 255 outline like VOC."""
  h, w = size
  label = np.zeros((h, w), np.uint8)
  for _ in range(3):
    k = int(rng.integers(1, num_classes)) if num_classes > 1 else 0
    y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
    y1, x1 = int(rng.integers(y0 + 3, h + 1)), int(rng.integers(x0 + 3, w + 1))
    label[y0:y1, x0:x1] = k
    if border:
      label[y0, x0:x1] = 255
  colors = np.random.default_rng(12345).integers(0, 256, (256, 3))
  image = colors[label] + rng.normal(0, 10, (h, w, 3))
  return np.clip(image, 0, 255).astype(np.uint8), label


def _save_label(path: str, label: np.ndarray, palette: bool) -> None:
  if palette:  # class ids as palette indices, shown in VOC colours
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    im.putpalette(voc_palette())
  else:
    im = Image.fromarray(label)
  im.save(path)


def make_voc_fixture(root, n: int = 6, size: tuple[int, int] = (40, 52), num_classes: int = 21,
                     palette: bool = True, *, val: int = 2, aug_only: int = 0, seed: int = 0) -> dict:
  """PASCAL VOC 2012 layout: JPEGImages/*.jpg, SegmentationClass/*.png (palette or grayscale),
  ImageSets/Segmentation/{train,val,trainval}.txt. The last `aug_only` names have their label only in
  SegmentationClassAug/ (grayscale), as in the augmented VOC set. Returns names, splits and true labels."""
  root = str(root)
  for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  if aug_only:
    os.makedirs(os.path.join(root, "SegmentationClassAug"), exist_ok=True)
  rng = np.random.default_rng(seed)
  names = [f"2007_{i:06d}" for i in range(n)]
  labels, images = {}, {}
  for i, name in enumerate(names):
    image, label = random_scene(rng, size, num_classes)
    Image.fromarray(image).save(os.path.join(root, "JPEGImages", f"{name}.jpg"), quality=95)
    if i >= n - aug_only:
      _save_label(os.path.join(root, "SegmentationClassAug", f"{name}.png"), label, palette=False)
    else:
      _save_label(os.path.join(root, "SegmentationClass", f"{name}.png"), label, palette)
    labels[name], images[name] = label, image
  train, val_names = names[:n - val], names[n - val:]
  for split, items in (("train", train), ("val", val_names), ("trainval", names)):
    with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
      f.writelines(f"{x}\n" for x in items)
  return {"root": root, "names": names, "train": train, "val": val_names, "labels": labels, "images": images}


def make_cityscapes_fixture(root, splits: Mapping[str, int] | None = None, size: tuple[int, int] = (32, 64),
                            cities: tuple[str, ...] = ("aachen", "bochum"), *, seed: int = 0) -> dict:
  """Cityscapes layout: leftImg8bit/<split>/<city>/<city>_000000_0000NN_leftImg8bit.png and
  gtFine/<split>/<city>/..._gtFine_labelTrainIds.png (19 classes, 255 ignore). Returns ids and labels."""
  root = str(root)
  splits = dict(splits or {"train": 3, "val": 2})
  rng = np.random.default_rng(seed)
  out = {"root": root, "labels": {}}
  serial = 0
  for split, count in splits.items():
    ids = []
    for i in range(count):
      city = cities[i % len(cities)]
      stem = f"{city}_000000_{serial:06d}"  # unique over splits, like the real frame ids
      serial += 1
      for d in ("leftImg8bit", "gtFine"):
        os.makedirs(os.path.join(root, d, split, city), exist_ok=True)
      image, label = random_scene(rng, size, 19)
      Image.fromarray(image).save(os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"))
      Image.fromarray(label).save(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelTrainIds.png"))
      ids.append(stem)
      out["labels"][stem] = label
    out[split] = ids
  return out


def make_folder_fixture(root, n: int = 5, size: tuple[int, int] = (36, 44), num_classes: int = 5, *,
                        splits: Mapping[str, int] | None = None, image_ext: str = ".png", seed: int = 0) -> dict:
  """images/ + labels/ with matching stems (grayscale label PNGs); with `splits` ({"train": 3, "val": 2})
  uses images/<split>/ and labels/<split>/. Returns stems per split ("all" without splits) and labels."""
  root = str(root)
  rng = np.random.default_rng(seed)
  groups = dict(splits) if splits else {"": n}
  out = {"root": root, "labels": {}}
  for split, count in groups.items():
    image_dir, label_dir = os.path.join(root, "images", split), os.path.join(root, "labels", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    stems = []
    for i in range(count):
      stem = f"{split or 'img'}_{i:03d}"
      image, label = random_scene(rng, size, num_classes, border=False)
      Image.fromarray(image).save(os.path.join(image_dir, stem + image_ext))
      Image.fromarray(label).save(os.path.join(label_dir, stem + ".png"))
      stems.append(stem)
      out["labels"][stem] = label
    out[split or "all"] = stems
  return out


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, arg: str | None = None, **overrides):
  """`configs/<path>`'s get_config(arg) with dotted overrides applied (`**{"train.steps": 4}`), then locked."""
  from maskseg_jax import config_base
  return config_base.load_config(os.path.join(REPO, path), arg, overrides)


TINY_LMAE = {"data.synthetic.num_train": 16, "data.synthetic.num_val": 8, "data.synthetic.image_size": (32, 32),
             "data.crop_size": (40, 40), "data.batch_size": 8, "data.eval_batch_size": 8,
             "model.image_size": (32, 32), "model.patch_size": 8, "model.enc_dim": 64, "model.dec_dim": 32,
             "optim.plateau_accumulation": 2, "train.steps": 2, "train.log_every": 2, "train.eval_every": 2,
             "train.checkpoint_every": 2, "train.num_images": 0}


def tiny_lmae_config(**overrides):
  """The tiny synthetic L-MAE (6 classes): 32 px input, patch 8 (16 patches), trained on 40 px crops, 2 steps."""
  from maskseg_jax import config_base
  return config_base.load_config("lmae", "synthetic", {**TINY_LMAE, **overrides})


def train_tiny_lmae(workdir: str, **overrides) -> str:
  """`tiny_lmae_config` trained into `workdir`: enough to load and complete files, not to complete them well."""
  from maskseg_jax import train
  train.run(tiny_lmae_config(**overrides), workdir)
  return workdir
