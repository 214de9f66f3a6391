"""Packs a VOC-layout folder into a TFDS ArrayRecord dataset, read back by the `tfds` source.

Why: one ArrayRecord file per split gives fast random access and no per-file opens on network storage, and
grain reads it directly. TensorFlow is not installed, so images are stored as zlib-compressed uint8 tensors
(`tfds.features.Image` needs TensorFlow to encode). The builder is not registered by name: the packed folder
carries its own metadata (features, splits, class names), which `tfds.data_source` reads from files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from maskseg_jax.data import file_layouts
from maskseg_jax.data import sources as sources_lib
from maskseg_jax.errors import DataError

DATASET_NAME = "maskseg_folder"


class MasksegFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Image/label pairs from `sources_lib.Source`s; one builder config per packed dataset (e.g. `camvid`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "image/label as zlib uint8 tensors, id as text."}
  # No download checksums to find next to the code. (tfds 4.9.10's lookup of this path for an installed
  # package imports `importlib_resources`, which it does not depend on.)
  code_path = None

  def __init__(self, *, splits: Mapping[str, sources_lib.Source] | None = None, **kwargs):
    self._split_sources = dict(splits or {})
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    first = next(iter(self._split_sources.values()), None)
    metadata = tfds.core.MetadataDict()
    if first is not None:
      metadata.update(num_classes=first.num_classes, class_names=list(first.class_names),
                      ignore_label=first.ignore_label)
    return tfds.core.DatasetInfo(
        builder=self,
        description="Semantic segmentation image/label pairs packed by maskseg_jax.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
            "id": tfds.features.Text(),
        }),
        metadata=metadata,
        disable_shuffling=True,  # keep the split's order (records line up with the split file)
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded: the data is a local folder
    return {name: self._generate_examples(src) for name, src in self._split_sources.items()}

  def _generate_examples(self, source: sources_lib.Source):
    for i in range(len(source)):
      ex = source[i]  # decoded and checked by the source
      yield f"{i:08d}_{ex['id']}", {"image": ex["image"], "label": ex["label"], "id": ex["id"]}


def prepare_tfds(root: str | os.PathLike, data_dir: str | os.PathLike, *, name: str = "camvid",
                 splits: Sequence[str] | Mapping[str, str] = ("train", "val"), reader: str = "camvid",
                 label_dir: str = "", num_classes: int | None = None, ignore_label: int = 255,
                 overwrite: bool = False) -> str:
  """Packs `root` (VOC layout) into `data_dir` and returns the TFDS name, e.g. `maskseg_folder/camvid`.

  `splits` are ImageSets names or split files; give a mapping {tfds_split: split} to rename them (TFDS split
  names must be identifiers). `reader` is `camvid` or `voc` (`voc` with `num_classes` for other VOC-layout
  sets). Then read it with `data.name='tfds'`, `data.root=data_dir`, `data.tfds_name=<returned name>`.
  """
  if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
    raise DataError(f"TFDS config name {name!r} must be lower-case letters, digits and '_'")
  split_map = dict(splits) if isinstance(splits, Mapping) else {
      os.path.splitext(os.path.basename(s))[0]: s for s in splits}
  srcs = {}
  for tfds_split, split in split_map.items():
    if not re.fullmatch(r"\w+", tfds_split):
      raise DataError(f"TFDS split name {tfds_split!r} (for {split}) must be an identifier; pass a mapping")
    if reader == "camvid":
      srcs[tfds_split] = file_layouts.CamVidSource(root, split, label_dir=label_dir, ignore_label=ignore_label)
    elif reader == "voc":
      n = num_classes or 21
      srcs[tfds_split] = file_layouts.VOCSource(
          root, split, label_dir=label_dir, num_classes=n,
          class_names=file_layouts.VOC_CLASSES if n == 21 else None, ignore_label=ignore_label)
    else:
      raise DataError(f"prepare_tfds reader {reader!r} unknown; expected 'camvid' or 'voc'")
  for src in srcs.values():
    missing = src.check_files()
    if missing:
      raise DataError(f"{len(missing)} files listed by {src!r} do not exist, e.g. {missing[:5]}")
  config = tfds.core.BuilderConfig(name=name, description=f"packed from {os.path.abspath(root)}")
  builder = MasksegFolder(splits=srcs, data_dir=str(data_dir), config=config, file_format="array_record")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  return f"{DATASET_NAME}/{name}"
