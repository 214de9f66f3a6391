"""Reading a dataset packed by `maskseg_jax.data.tfds_builder.prepare_tfds` with `tfds.data_source`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskseg_jax.data.source_base import Source
from maskseg_jax.errors import ConfigError, DataError


def _tfds_found(data_dir: str) -> list[str]:
  """Prepared datasets under data_dir, as `name/config` or `name` (for error messages)."""
  found = set()
  infos = list(Path(data_dir).glob("*/*/*/dataset_info.json")) + list(Path(data_dir).glob("*/*/dataset_info.json"))
  for info in infos:
    rel = info.parent.parent.relative_to(data_dir)  # <name>[/<config>]/<version>/dataset_info.json
    found.add(str(rel).replace(os.sep, "/"))
  return sorted(found)


class TFDSSource(Source):
  """A dataset packed by `maskseg_jax.data.tfds_builder.prepare_tfds`, read with `tfds.data_source`."""

  name = "tfds"

  def __init__(self, data_dir: str | os.PathLike, name: str, split: str = "train", *,
               num_classes: int | None = None, class_names: Sequence[str] | None = None,
               ignore_label: int = 255):
    data_dir = str(data_dir)
    hint = ("build it with maskseg_jax.data.tfds_builder.prepare_tfds(root, data_dir) and set data.root to "
            "data_dir and data.tfds_name to the returned name")
    if not os.path.isdir(data_dir):
      raise DataError(f"TFDS data_dir {data_dir} not found; {hint}")
    import tensorflow_datasets as tfds  # imported lazily: slow, and only this source needs it
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = os.path.isdir(str(builder.data_path)) and bool(builder.info.splits)
    except Exception as e:  # tfds raises several types (with very long messages) for an unknown dataset
      raise DataError(f"TFDS dataset {name!r} not found in {data_dir} (found: {_tfds_found(data_dir) or 'none'}; "
                      f"{type(e).__name__}); {hint}") from e
    if not prepared:
      raise DataError(f"TFDS dataset {name!r} has no prepared data in {data_dir}; {hint}")
    if split not in builder.info.splits:
      raise DataError(f"TFDS dataset {name!r} in {data_dir} has no split {split!r}; available: "
                      f"{sorted(builder.info.splits)}")
    meta = dict(builder.info.metadata or {})
    self.num_classes = int(num_classes if num_classes is not None else meta.get("num_classes", 0))
    if self.num_classes < 1:
      raise ConfigError(f"TFDS dataset {name!r} stores no num_classes; pass num_classes")
    names = class_names or meta.get("class_names") or [f"class_{i}" for i in range(self.num_classes)]
    self.class_names = tuple(names)
    self.ignore_label = int(ignore_label)
    self.data_dir, self.tfds_name, self.split = data_dir, name, split
    self._ds = tfds.data_source(name, split=split, data_dir=data_dir)
    if len(self._ds) == 0:
      raise DataError(f"TFDS dataset {name!r} split {split!r} in {data_dir} is empty")

  @classmethod
  def from_config(cls, data_config, split: str) -> TFDSSource:
    return cls(data_config.root, data_config.get("tfds_name", "maskseg_folder/camvid"), split,
               ignore_label=data_config.ignore_label)

  def __len__(self) -> int:
    return len(self._ds)

  def _load(self, index: int) -> dict[str, Any]:
    ex = self._ds[index]
    item_id = ex.get("id", str(index))
    if isinstance(item_id, bytes | np.bytes_):
      item_id = item_id.decode()
    return {"image": np.asarray(ex["image"]), "label": np.asarray(ex["label"]), "id": str(item_id)}

  def describe(self, index: int) -> str:
    return f"TFDS {self.tfds_name} ({self.data_dir}) split {self.split!r} record {index}"


