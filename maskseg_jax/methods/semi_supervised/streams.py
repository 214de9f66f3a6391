"""Labeled and unlabeled sources and their zipped training stream for semi-supervised methods.

Splits come either as given (`data.train_split` for the labeled part, `semi.unlabeled_split`; VOC uses
UniMatch's `splits/voc/<n>/labeled.txt|unlabeled.txt` under data.root, synthetic data uses slices), or are
generated once per workdir from `data.train_split` by `semi.labeled_fraction` (CamVid, Cityscapes: the dataset
folder may be read-only, so the files go to the workdir). Each stream shuffles and repeats on its own; the zip
is one checkpointable iterator, so a resumed run continues both exactly.
"""

from __future__ import annotations

import os
import re

import numpy as np

from maskseg_jax.data import pipeline, sources, splits, strong_augment
from maskseg_jax.errors import ConfigError

UNLABELED_PREFIX = "u_"  # batch keys of the unlabeled stream: u_image, u_image_s1, u_cutmix_box1, ...


def resolve_splits(config, workdir: str) -> tuple[str, str]:
  """(labeled split, unlabeled split), writing generated split files if `semi.labeled_fraction` > 0."""
  dc, sc = config.data, config.semi
  fraction = float(sc.labeled_fraction)
  if fraction <= 0:
    return dc.train_split, sc.unlabeled_split
  if not issubclass(sources.SOURCES.get(dc.name, object), sources.FileSource):
    raise ConfigError(f"semi.labeled_fraction={fraction} generates split files, which needs a file-backed dataset; "
                      f"data.name={dc.name!r} is not. Set semi.labeled_fraction=0 and give data.train_split and "
                      "semi.unlabeled_split (e.g. slices 'train[:32]' and 'train[32:]')")
  base = sources.select_source(dc, dc.train_split)  # as stored (no image_scale): split files list file paths
  tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dc.name}-{dc.train_split}-seed{int(sc.split_seed)}")
  out_dir = os.path.join(sc.split_dir or os.path.join(workdir, "splits"), tag)
  k = splits.split_counts(len(base), [fraction])[0]
  labeled, unlabeled = (os.path.join(out_dir, str(k), f) for f in ("labeled.txt", "unlabeled.txt"))
  if not (os.path.isfile(labeled) and os.path.isfile(unlabeled)):
    splits.make_split_files(base, [fraction], int(sc.split_seed), out_dir=out_dir)
  return os.path.abspath(labeled), os.path.abspath(unlabeled)


def load_semi_sources(config, workdir: str, *, unlabeled: bool = True):
  """(labeled, unlabeled or None, val) sources, each validated before any step."""
  from maskseg_jax.methods import segmentation  # the val reader rule (data.val_name) lives with the evaluator
  dc = config.data
  labeled_split, unlabeled_split = resolve_splits(config, workdir)
  out = [sources.build_source(dc, labeled_split),
         sources.build_source(dc, unlabeled_split) if unlabeled else None,
         sources.build_source(segmentation.val_data_config(dc), dc.val_split)]
  for src in out:
    if src is not None:
      sources.validate_source(src, dc.validate_items)
  return tuple(out)


TRUTH_KEY = "truth"  # u_truth: the unlabeled crop's ground truth, for diagnostics only (semi.diagnostics)
NO_TRUTH = 255


class _UnlabeledView:
  """Strong views + CutMix boxes + padding mask. The label is dropped so no ground truth reaches the step, unless
  `keep_truth` (semi.diagnostics): then it travels as `truth` (padding -> 255), a key that no loss reads."""

  def __init__(self, data_config, semi_config, keep_truth: bool = False):
    self.inner = strong_augment.make_unlabeled_transform(data_config, semi_config)
    self.keep_truth = keep_truth

  def __call__(self, example, rng: np.random.Generator):
    out = self.inner(example, rng)
    label = out.pop("label", None)
    if self.keep_truth and label is not None:
      label = np.asarray(label, np.int32)
      out[TRUTH_KEY] = np.where(label == strong_augment.UNLABELED_PAD, NO_TRUTH, label).astype(np.int32)
    return out


def carries_truth(source) -> bool:
  """Whether the unlabeled source's items have labels (the diagnostics' hidden truth); probes the first item."""
  return len(source) > 0 and source[0].get("label") is not None


def unlabeled_data_config(config):
  """data config of the unlabeled stream: padding labelled 254 (marked as ignore); same batch size (UniMatch's
  B + B, which lets the step interleave both batches without moving rows between devices)."""
  udc = config.data.copy_and_resolve_references()
  with udc.unlocked():
    udc.ignore_label = strong_augment.UNLABELED_PAD
  return udc


def train_stream(config, labeled_src, unlabeled_src=None, *, process_index: int = 0,
                 process_count: int = 1, keep_truth: bool | None = None) -> pipeline.ZippedIterator:
  """Batches {"image", "label"} (+ "u_image", "u_image_s1/2", "u_cutmix_box1/2", "u_ignore_mask"; "u_truth" with
  `keep_truth`, default semi.diagnostics)."""
  if keep_truth is None:
    keep_truth = bool(config.semi.get("diagnostics", False))
  kw = dict(process_index=process_index, process_count=process_count)
  streams = {"": pipeline.train_iterator(labeled_src, config.data, config.seed, **kw)}
  if unlabeled_src is not None:
    udc = unlabeled_data_config(config)
    streams[UNLABELED_PREFIX] = pipeline.train_iterator(
        unlabeled_src, udc, config.seed + 1, extra_transform=_UnlabeledView(udc, config.semi, keep_truth), **kw)
  return pipeline.ZippedIterator(streams)
