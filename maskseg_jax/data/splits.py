"""Labeled/unlabeled partitions for semi-supervised experiments.

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


def make_split_files(source_or_root: sources_lib.FileSource | str | os.PathLike,
                     fractions: Sequence[float] = (1 / 16, 1 / 8, 1 / 4), seed: int = 0, *,
                     out_dir: str | os.PathLike, split: str = "train") -> dict[float, tuple[str, str]]:
  """Writes `out_dir/<num_labeled>/labeled.txt` and `unlabeled.txt` for each fraction.

  `source_or_root` is a file-backed source or a VOC-layout root (then `split` of it is partitioned). Paths
  are relative to the source root, so use the files with `data.root` set to that root. Returns
  {fraction: (labeled_path, unlabeled_path)}.
  """
  if isinstance(source_or_root, sources_lib.FileSource):
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
