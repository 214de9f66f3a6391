"""Random-access segmentation sources (grain's `RandomAccessDataSource` protocol: `len`, `[i]`).

`source[i] -> {"image": uint8[H, W, 3], "label": uint8[H, W], "id": str}`; every source also has
`num_classes`, `class_names` and `ignore_label`. File-backed sources resolve their file list when built (cheap,
no decoding), `validate_source` checks every file exists and decodes a sample before training, and every
read re-checks shapes and label range, so a bad file met late in training still fails with its name instead
of a silent wrong loss. `build_source(config.data, split)` picks the reader by `data.name` from `SOURCES`.

Where things live: the decoders and base classes in `source_base.py`, the VOC / CamVid / Cityscapes / folder
layouts in `file_layouts.py`, the embedded scenes in `synthetic.py`, TFDS in `tfds_source.py`.
"""

from __future__ import annotations

import re

import numpy as np

from maskseg_jax.data.file_layouts import CamVidSource, CityscapesSource, FolderSource, VOCSource
from maskseg_jax.data.source_base import (FileSource, Source, SubsetSource, check_example, read_image, read_label,
                                          subset)
from maskseg_jax.data.synthetic import SyntheticSource
from maskseg_jax.data.tfds_source import TFDSSource
from maskseg_jax.errors import ConfigError, DataError

# The base names are re-exported: callers read files and build subsets through this one module.
__all__ = ["SOURCES", "build_source", "select_source", "validate_source", "FileSource", "Source", "SubsetSource", "check_example",
           "read_image", "read_label", "subset"]

SOURCES: dict[str, type] = {
    "voc": VOCSource,
    "camvid": CamVidSource,
    "cityscapes": CityscapesSource,
    "folder": FolderSource,
    "synthetic": SyntheticSource,
    "tfds": TFDSSource,
}

# `train`, `train[a:b]`, `train@dev`, `train@fit[a:b]`: a split, optionally its dev/fit part, optionally a slice.
_SPLIT = re.compile(r"^(?P<base>[^\[\]@]+)(?:@(?P<part>\w+))?(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def build_source(data_config, split: str) -> Source:
  """The source `data.name` for `split` (`select_source`), resized by `data.image_scale` and cached in memory
  if `data.cache_items`."""
  source = select_source(data_config, split)
  scale = float(data_config.get("image_scale", 1.0))
  if scale != 1.0:
    from maskseg_jax.data.views import ScaledSource
    source = ScaledSource(source, scale)
  if data_config.get("cache_items", False):
    from maskseg_jax.data.views import CachedSource
    source = CachedSource(source)
  return source


def select_source(data_config, split: str) -> Source:
  """The items of `split` as stored: a split name or file; `name@dev` / `name@fit` its development split
  and the rest (`data.dev_fraction`, carved by sequence: data/splits.py); `[a:b]` takes a slice of it."""
  name = data_config.name
  if name not in SOURCES:
    raise ConfigError(f"unknown data.name {name!r}; known: {sorted(SOURCES)}")
  if not 0 <= int(data_config.ignore_label) <= 255:
    raise ConfigError(f"data.ignore_label={data_config.ignore_label} must fit in uint8 labels (0..255)")
  m = _SPLIT.match(split)
  base = m.group("base") if m else split
  source = SOURCES[name].from_config(data_config, base)
  if source.num_classes != data_config.num_classes:
    raise ConfigError(f"data.num_classes={data_config.num_classes} but {name} has {source.num_classes} "
                      f"classes; set --config.data.num_classes={source.num_classes}")
  if m and m.group("part"):
    from maskseg_jax.data.splits import dev_part
    source = dev_part(source, m.group("part"), float(data_config.get("dev_fraction", 0.2)))
  if m and (m.group("start") is not None or m.group("stop") is not None):
    start = int(m.group("start")) if m.group("start") else None
    stop = int(m.group("stop")) if m.group("stop") else None
    source = SubsetSource(source, range(len(source))[start:stop])
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
