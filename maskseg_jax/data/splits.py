"""Partitions of a split: labeled/unlabeled for semi-supervised experiments, and the development split.

The development split (`carve_dev`, used as `data.train_split="train@fit"` / `data.val_split="train@dev"`) is
where every choice of a recipe is made, so `val` is only ever reported. It is carved from `train` by sequence:
an item's sequence is its id up to the last `_` (CamVid `0016E5_07959` -> `0016E5`, Cityscapes
`aachen_000000_000019` -> `aachen_000000`). With many sequences whole sequences go to dev, evenly spaced in name
order; with few (CamVid's train has 3), the first frames of each sequence do, as one contiguous block, so
near-duplicate neighbouring frames fall on one side except at one boundary per sequence. The first, not the
last: CamVid's val is a block cut from the middle-to-end of 0016E5, and a dev block beside it would make choices
on dev nearly choices on val. No seed: the carving depends on the ids only.

Written as split files (`image_path label_path` per line, relative to the dataset root, the UniMatch/CPS
format) so a partition is a file you can diff, share and pass as `data.train_split`. Partitions are nested
(the 1/16 labeled set is inside the 1/8 one) and deterministic by seed, so results across fractions compare
like with like.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from maskseg_jax.data import sources as sources_lib
from maskseg_jax.errors import ConfigError, DataError


DEV_PARTS = ("fit", "dev")
MIN_SEQUENCES_FOR_WHOLE = 20  # at least this many sequences: dev takes whole sequences, else each one's last frames


def sequence_of(item_id: str) -> str:
  """The sequence an item belongs to: its id up to the last `_` ("" when there is none)."""
  return item_id.rsplit("_", 1)[0] if "_" in item_id else ""


def carve_dev(ids: Sequence[str], fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
  """(fit, dev) sorted indices into `ids`: about `fraction` of the items, carved by sequence (module docstring)."""
  if not 0.0 < fraction < 1.0:
    raise ConfigError(f"data.dev_fraction={fraction}; expected a fraction in (0, 1)")
  if len(ids) < 2:
    raise DataError(f"a development split needs at least 2 items to carve from, got {len(ids)}")
  groups: dict[str, list[int]] = {}
  for i, item_id in enumerate(ids):
    groups.setdefault(sequence_of(item_id), []).append(i)
  names = sorted(groups)
  dev: list[int] = []
  if len(names) >= MIN_SEQUENCES_FOR_WHOLE:
    # Evenly spaced whole sequences: sequence j is dev when floor((j + 1) f) passes an integer.
    dev = [i for j, name in enumerate(names) if int((j + 1) * fraction) > int(j * fraction) for i in groups[name]]
  else:
    for name in names:
      members = sorted(groups[name], key=lambda i: ids[i])
      k = int(round(len(members) * fraction))
      dev.extend(members[:k])
  if not dev or len(dev) == len(ids):
    raise DataError(f"carving a development split of {fraction:g} from {len(ids)} items leaves one side empty; "
                    f"set data.dev_fraction so both sides keep an item")
  dev_idx = np.array(sorted(dev))
  fit_idx = np.setdiff1d(np.arange(len(ids)), dev_idx)
  return fit_idx, dev_idx


def dev_part(source, part: str, fraction: float):
  """The `fit` or `dev` part of `source` (a SubsetSource view)."""
  if part not in DEV_PARTS:
    raise ConfigError(f"split part @{part}; expected one of {['@' + p for p in DEV_PARTS]}")
  fit_idx, dev_idx = carve_dev([source.id_of(i) for i in range(len(source))], fraction)
  return sources_lib.SubsetSource(source, fit_idx if part == "fit" else dev_idx)


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
  """Labeled counts: a fraction < 1 of `n` (at least 1), or an absolute count if >= 1 (e.g. 92, 1464)."""
  counts = []
  for f in fractions:
    k = int(round(f)) if f >= 1 else max(1, int(round(n * f)))
    if not 0 < k < n:
      raise ConfigError(f"labeled fraction/count {f} gives {k} of {n} items; expected between 1 and {n - 1}")
    counts.append(k)
  return counts


def split_indices(n: int, num_labeled: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(labeled, unlabeled) sorted indices; the first `num_labeled` of one seeded permutation, so nested."""
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:num_labeled]), np.sort(perm[num_labeled:])


def make_split_files(source_or_root: sources_lib.FileSource | sources_lib.SubsetSource | str | os.PathLike,
                     fractions: Sequence[float] = (1 / 16, 1 / 8, 1 / 4), seed: int = 0, *,
                     out_dir: str | os.PathLike, split: str = "train") -> dict[float, tuple[str, str]]:
  """Writes `out_dir/<num_labeled>/labeled.txt` and `unlabeled.txt` for each fraction.

  `source_or_root` is a file-backed source (or a subset of one, e.g. `train@fit`) or a VOC-layout root (then
  `split` of it is partitioned). Paths are relative to the source root, so use the files with `data.root` set to that root. Returns
  {fraction: (labeled_path, unlabeled_path)}.
  """
  if isinstance(source_or_root, sources_lib.FileSource | sources_lib.SubsetSource):
    source = source_or_root
  elif isinstance(source_or_root, str | os.PathLike):
    source = sources_lib.VOCSource(source_or_root, split, num_classes=256, class_names=None)
  else:
    raise DataError(f"make_split_files needs a file-backed source or a VOC-layout root, got {source_or_root!r}")
  pairs = source.relative_pairs()
  out = {}
  for f, k in zip(fractions, split_counts(len(pairs), fractions)):
    labeled, unlabeled = split_indices(len(pairs), k, seed)
    folder = os.path.join(str(out_dir), str(k))
    os.makedirs(folder, exist_ok=True)
    paths = []
    for fname, idx in (("labeled.txt", labeled), ("unlabeled.txt", unlabeled)):
      path = os.path.join(folder, fname)
      with open(path, "w") as fh:
        fh.writelines(f"{pairs[i][0]} {pairs[i][1]}\n" for i in idx)
      paths.append(path)
    out[f] = (paths[0], paths[1])
  return out
