"""grain input pipelines: infinite shuffled training batches and padded whole-image eval batches.

Training: source -> shuffle(seed) -> repeat -> per-example random augmentation (rng derived from (seed,
global position in the stream)) -> this process's rows of each global batch -> batch. Every process sees the
same global example stream and takes rows [p * b, (p + 1) * b) of each global batch, so global batch k is the
same examples with the same augmentation for any number of processes: a run on N processes reaches the
parameters of a one-process run. The returned grain iterator is checkpointable (`get_state()`/`set_state()`)
and its state counts global batches, so train.py's checkpoints resume exactly, also with another process
count. Batches are process-local: `b = batch_size // process_count` examples, assembled into global arrays by
the caller.

Eval: every process yields the same number of fixed-shape batches (images padded to `data.eval_size`, label
padded with the ignore id, short last batches padded with `valid=False` examples), so jitted eval steps never
recompile and collective ops never wait for a process that ran out of data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import grain
import numpy as np
from absl import flags

from maskseg_jax.data import transforms as T
from maskseg_jax.data.source_base import Source
from maskseg_jax.errors import ConfigError, DataError

Example = dict[str, Any]
ExampleFn = Callable[[Example, np.random.Generator], Example]


def _local_batch(global_batch: int, process_count: int, what: str) -> int:
  if global_batch < process_count or global_batch % process_count:
    raise ConfigError(f"data.{what}={global_batch} is not divisible by the {process_count} processes; expected "
                      f"a multiple of {process_count}")
  return global_batch // process_count


def _describe(source, index: int) -> str:
  describe = getattr(source, "describe", None)
  return describe(index) if describe else f"item {index} of {type(source).__name__}"


def _id_of(source, index: int) -> str:
  id_of = getattr(source, "id_of", None)
  return id_of(index) if id_of else str(source[index].get("id", index))


def _read_options(data_config, buffer: int) -> grain.ReadOptions:
  threads = int(data_config.get("read_threads", 2))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer if threads > 0 else 0)


class StandardTrainTransform:
  """Random scale -> pad/crop to `crop_size` -> optional hflip -> normalize (plus the uint8 crop as raw_image).

  A class, not a closure, so it pickles into grain worker processes; it copies plain values out of the config.
  """

  def __init__(self, data_config):
    self.scale_range = tuple(float(s) for s in data_config.scale_range)
    self.crop_size = tuple(int(s) for s in data_config.crop_size)
    self.hflip = bool(data_config.hflip)
    self.mean = tuple(float(m) for m in data_config.mean)
    self.std = tuple(float(s) for s in data_config.std)
    self.ignore_label = int(data_config.ignore_label)

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    image, label = T.random_scale(example["image"], example["label"], rng, self.scale_range)
    image, label = T.random_crop_pad(image, label, rng, self.crop_size, ignore_label=self.ignore_label)
    if self.hflip:
      image, label = T.random_hflip(image, label, rng)
    return {"image": T.normalize(image, self.mean, self.std), "label": label.astype(np.int32),
            "raw_image": image}


class _TrainMap:
  """transform, then the method's optional extra_transform; drops what cannot or need not go to devices."""

  def __init__(self, transform: ExampleFn, extra_transform: ExampleFn | None):
    self.transform = transform
    self.extra_transform = extra_transform

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    out = dict(self.transform(example, rng))
    out.pop("id", None)
    if self.extra_transform is not None:
      out = dict(self.extra_transform(out, rng))
      out.pop("id", None)
    else:
      out.pop("raw_image", None)
    return out


class _ProcessRows(grain.MapDataset):
  """The rows of every global batch that belong to one process: local item i is global stream position
  (i // local) * global + process_index * local + i % local. Only these items are read and augmented."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, local_batch: int, process_index: int):
    super().__init__(parent)
    self._global, self._local, self._process = global_batch, local_batch, process_index
    self._length = (len(parent) // global_batch) * local_batch

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(int(index), self._local)
    return self._parent[batch * self._global + self._process * self._local + row]

  def __str__(self) -> str:
    return f"_ProcessRows(global={self._global}, local={self._local}, process={self._process})"


def train_iterator(source: Source, data_config, seed: int, *, process_index: int = 0, process_count: int = 1,
                   extra_transform: ExampleFn | None = None, transform: ExampleFn | None = None):
  """Infinite checkpointable iterator of process-local batches `{"image": f32[b,h,w,3], "label": i32[b,h,w]}`.

  `transform(example, rng)` replaces the standard augmentation (it gets the source item); `extra_transform
  (example, rng)` runs after it on the augmented dict, where the uint8 crop is under "raw_image", and its
  output (fixed-shape arrays) is what gets batched. Without `extra_transform`, "raw_image" is dropped.
  """
  global_batch = int(data_config.batch_size)
  local_batch = _local_batch(global_batch, process_count, "batch_size")
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} not in [0, {process_count})")
  ds = grain.MapDataset.source(source).shuffle(seed=int(seed)).repeat()
  # (seed, 0): the augmentation seed one-process runs have always used, so their batches are unchanged.
  aug_seed = int(np.random.SeedSequence([int(seed), 0]).generate_state(1)[0])
  ds = ds.random_map(_TrainMap(transform or StandardTrainTransform(data_config), extra_transform), seed=aug_seed)
  ds = _ProcessRows(ds, global_batch, local_batch, process_index).batch(local_batch, drop_remainder=True)
  # Batching before to_iter_dataset makes the iterator state count global batches (not process-local examples).
  it_ds = ds.to_iter_dataset(_read_options(data_config, 2))
  workers = int(data_config.get("num_workers", 0))
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags; outside an absl app use the defaults
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it_ds)


def _eval_layout(num_items: int, data_config, process_count: int) -> tuple[int, int, int]:
  """(items used, local batch, batches per process)."""
  local_batch = _local_batch(int(data_config.eval_batch_size), process_count, "eval_batch_size")
  limit = int(data_config.max_eval_images)
  if limit == 0 or limit < -1:
    raise ConfigError(f"data.max_eval_images={limit}; expected -1 (all) or a positive count")
  n = num_items if limit < 0 else min(num_items, limit)
  per_process = math.ceil(n / process_count)
  return n, local_batch, math.ceil(per_process / local_batch)


def eval_num_items(source: Source, data_config) -> int:
  """Items an evaluation reads (all processes): the split, or its first `data.max_eval_images`."""
  return _eval_layout(len(source), data_config, 1)[0]


def eval_num_batches(source: Source, data_config, *, process_count: int = 1) -> int:
  """Batches `eval_batches` yields on every process."""
  return _eval_layout(len(source), data_config, process_count)[2]


class _EvalMap:
  """Local position j -> global item `j * process_count + process_index`, or a padding example past the end."""

  def __init__(self, source: Source, data_config, n: int, process_index: int, process_count: int):
    self.source = source
    self.n, self.p, self.pc = n, process_index, process_count
    self.size = tuple(int(s) for s in data_config.eval_size)
    self.resize = bool(data_config.get("eval_resize", False))
    self.mean = tuple(float(m) for m in data_config.mean)
    self.std = tuple(float(s) for s in data_config.std)
    self.ignore_label = int(data_config.ignore_label)

  def __call__(self, j: int) -> Example:
    g = int(j) * self.pc + self.p
    h, w = self.size
    if g >= self.n:
      return {"image": np.zeros((h, w, 3), np.float32), "label": np.full((h, w), self.ignore_label, np.int32),
              "valid": np.bool_(False), "raw_image": np.zeros((h, w, 3), np.uint8)}
    ex = self.source[g]
    image, label = ex["image"], ex["label"]
    ih, iw = image.shape[:2]
    if ih > h or iw > w:
      if not self.resize:
        raise DataError(f"{_describe(self.source, g)} is {ih}x{iw}, larger than data.eval_size={h}x{w}; set "
                        f"data.eval_size to at least ({ih}, {iw}), or data.eval_resize=True to downscale")
      image, label = T.resize_to_fit(image, label, self.size)
    raw, label = T.pad_to(image, label, self.size, ignore_label=self.ignore_label)
    normed, _ = T.pad_to(T.normalize(image, self.mean, self.std), None, self.size)
    return {"image": normed, "label": label.astype(np.int32), "valid": np.bool_(True), "raw_image": raw}


def eval_batches(source: Source, data_config, *, process_index: int = 0, process_count: int = 1):
  """Iterator of `{"image": f32[b,H,W,3], "label": i32[b,H,W], "valid": bool[b], "raw_image": u8[b,H,W,3]}`,
  b = eval_batch_size // process_count, (H, W) = data.eval_size; items are dealt to processes round-robin."""
  n, local_batch, num_batches = _eval_layout(len(source), data_config, process_count)
  ds = grain.MapDataset.source(range(num_batches * local_batch))
  ds = ds.map(_EvalMap(source, data_config, n, process_index, process_count))
  return iter(ds.to_iter_dataset(_read_options(data_config, 2 * local_batch)).batch(local_batch))


def eval_ids(source: Source, data_config, *, process_index: int = 0, process_count: int = 1) -> list[list[str]]:
  """Item ids of each eval batch of this process, "" for padding (ids stay on the host)."""
  n, local_batch, num_batches = _eval_layout(len(source), data_config, process_count)
  out = []
  for b in range(num_batches):
    ids = []
    for j in range(b * local_batch, (b + 1) * local_batch):
      g = j * process_count + process_index
      ids.append(_id_of(source, g) if g < n else "")
    out.append(ids)
  return out


class ZippedIterator:
  """Several checkpointable batch iterators advanced together, as one checkpointable iterator.

  Semi-supervised steps need a labeled and an unlabeled batch at once, each stream shuffling and repeating on
  its own (the labeled set is simply repeated across the unlabeled epoch). `streams` maps a key prefix to an
  iterator; `next()` merges their batches, prefixing each key (e.g. {"": labeled, "u_": unlabeled} ->
  "image", "label", "u_image", ...). grain's Orbax handler stores a non-`DatasetIterator` state as bytes, so
  `get_state()` returns JSON bytes of every stream's state and `set_state(bytes)` restores them all.
  """

  def __init__(self, streams: dict[str, Any]):
    if not streams:
      raise ConfigError("ZippedIterator needs at least one stream")
    self.streams = dict(streams)

  def __iter__(self):
    return self

  def __next__(self) -> Example:
    out = {}
    for prefix, it in self.streams.items():
      for key, value in next(it).items():
        out[prefix + key] = value
    return out

  def get_state(self) -> bytes:
    return json.dumps({prefix: it.get_state() for prefix, it in self.streams.items()}).encode()

  def set_state(self, state: bytes | str) -> None:
    states = json.loads(state)
    if sorted(states) != sorted(self.streams):
      raise DataError(f"data-iterator state has streams {sorted(states)}; this run has {sorted(self.streams)} "
                      "(was the checkpoint written by a different semi.variant?)")
    for prefix, it in self.streams.items():
      it.set_state(states[prefix])

  def start_prefetch(self) -> None:
    for it in self.streams.values():
      start = getattr(it, "start_prefetch", None)
      if start is not None:
        start()

  def close(self) -> None:
    for it in self.streams.values():
      close = getattr(it, "close", None)
      if close is not None:
        close()
