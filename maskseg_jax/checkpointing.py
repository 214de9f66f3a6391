"""The only module that imports Orbax: one CheckpointManager per run.

A checkpoint holds `state` (params, batch statistics, optimizer, step and method state such as prototypes),
`data` (the grain iterator's position, one file per process) and `meta` (the step and the metrics at that
step). Orbax writes each step into a temporary folder and renames it when complete, so a killed run never
leaves a half-written step that looks finished; a leftover temporary folder is ignored and removed when the
next run opens the folder. `meta` also holds a digest of every array of `state`, checked after each restore,
so bytes changed on disk after the save (a disk error, a bad copy) are found even when the file size is
unchanged. A damaged step (truncated, deleted or changed files) fails to restore: `restore()` falls back to
the previous step, moves the damaged one aside to `damaged_<step>` (never deleting it) and says so in one
line. A step written by a different model (other shapes) is not damage: it stops the run, naming the arrays. Iterator states count global batches (see data/pipeline.py), so a checkpoint written by N
processes restores with M processes: a process without its own state file takes process 0's.
Preservation: the last `keep` steps plus the best by `best_metric`.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import json
import os
import sys
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from maskseg_jax.errors import CheckpointError, CheckpointMismatchError


def leaf_name(path) -> str:
  """'params/backbone/conv/kernel/value': the same name for a live state and for Orbax's metadata tree."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _host_value(leaf) -> np.ndarray | None:
  """The full value of a leaf on this host (a replicated global array: its first local copy)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    if not leaf.is_fully_replicated:
      return None  # sharded over processes: no process holds it whole
    leaf = leaf.addressable_data(0)
  return np.asarray(jax.device_get(leaf))


def array_digests(tree) -> dict[str, list[str]]:
  """name -> [dtype, blake2b of shape and bytes] for every array leaf of `tree`."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _host_value(leaf)
    if value is None:
      continue
    h = hashlib.blake2b(repr(value.shape).encode(), digest_size=16)
    h.update(np.ascontiguousarray(value).tobytes())
    out[leaf_name(path)] = [str(value.dtype), h.hexdigest()]
  return out


def digest_mismatches(saved: dict, tree) -> list[str]:
  """Names of leaves whose restored bytes differ from the digest saved with them (same dtype only: a restore
  may cast, e.g. into bfloat16, and a cast value has other bytes)."""
  got = array_digests(tree)
  return sorted(name for name, (dtype, digest) in saved.items()
                if name in got and got[name][0] == dtype and got[name][1] != digest)


def _first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of an error without TensorStore's spec dump, for one-line reports."""
  text = (str(error) or type(error).__name__).split("See full TensorStore details", 1)[0]
  line = text.strip().splitlines()[0].strip() if text.strip() else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


@contextlib.contextmanager
def _quiet_orbax_leftovers():
  """Orbax's failed reads leave sibling coroutines whose exceptions Python prints at garbage collection
  ('Exception ignored in: <coroutine ...>' plus a TensorStore spec dump); the cause is already reported in one
  line, so those are dropped here (anything else still reaches the previous hook)."""
  previous = sys.unraisablehook

  def hook(unraisable):
    text = f"{unraisable.exc_value} {unraisable.object!r}"
    if "TensorStore" in text or "orbax" in text or "coroutine" in text:
      return
    previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


def _all_agree(ok: bool) -> bool:
  """True only if every process says ok (one process reading a damaged file makes every process fall back)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


_WHOLE_REPLICA_SAVES = []


def _save_replicas_whole_on_cpu() -> None:
  """On CPU, Orbax's default replica-parallel save slices every replicated array once per device, compiling a
  tiny slice program per shape: ~15 s on the first save of a small model, for nothing (one host memory)."""
  if not _WHOLE_REPLICA_SAVES and jax.default_backend() == "cpu":
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns about the (intended) override
    try:
      ocp.type_handlers.register_type_handler(
          jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
    finally:
      logging.set_verbosity(verbosity)
    _WHOLE_REPLICA_SAVES.append(True)


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 2, best_metric: str | None = None, best_mode: str = "max"):
    _save_replicas_whole_on_cpu()
    self.directory = os.path.abspath(directory)
    policies = [pp.LatestN(n=max(keep, 1))]
    if best_metric:
      policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=(best_mode == "min"), n=1,
                               keep_checkpoints_without_metrics=False))
    self.best_metric = best_metric
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy(policies),
        enable_async_checkpointing=False,  # a save returns when the step is on disk: simple and exact
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iterator=None, metrics: dict | None = None) -> None:
    usable = {k: float(v) for k, v in (metrics or {}).items()}
    if self.best_metric and self.best_metric not in usable:
      usable = None  # not ranked: kept only while it is among the latest
    meta = {"step": int(step), "metrics": usable or {}, "digests": array_digests(state)}
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=usable, force=True)
      self.manager.wait_until_finished()
    except OSError as e:  # a full disk or a folder made read-only during the run
      raise CheckpointError(f"could not write checkpoint step {step} to {self.directory} "
                            f"({e.strerror or _first_line(e)}); free space or fix the folder's permissions, then "
                            "rerun the same command to resume from the last saved step") from e

  def restore(self, abstract_state: Any, data_iterator=None, step: int | None = None, *,
              warn: Callable[[str], None] | None = None):
    """Restores into the shapes, dtypes and shardings of `abstract_state`; moves the iterator in place.

    Without `step`: the newest step that restores. Damaged newer steps are reported through `warn` and,
    once an older step restored (so the damage is the step's, not a model/config mismatch), moved aside.
    """
    if step is not None:
      return self._restore_step(int(step), abstract_state, data_iterator)
    warn = warn or logging.warning
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    failed = []
    for s in steps:
      try:
        result = self._restore_step(s, abstract_state, data_iterator, agree=True)
      except CheckpointMismatchError:
        raise  # another model wrote it: falling back would only find the same mismatch
      except CheckpointError as e:
        failed.append((s, _first_line(e.__cause__ or e)))
        continue
      if failed:
        moved = self._move_aside([f for f, _ in failed])
        for (f, cause), target in zip(failed, moved):
          warn(f"warning: step {f} is damaged ({cause}); kept as {os.path.basename(target)}, restoring step {s}")
      return result
    details = "; ".join(f"step {f}: {cause}" for f, cause in failed)
    raise CheckpointError(f"no checkpoint in {self.directory} could be restored ({details}); the checkpoints "
                          "are damaged: delete the folder to start over, or restore it from a backup")

  def _restore_step(self, step: int, abstract_state: Any, data_iterator=None, *, agree: bool = False):
    """One step, checked three ways: the saved names and shapes match the target (else a mismatch error),
    Orbax reads it, and every array's bytes match the digest saved with it (else it is damaged). `agree`:
    every process takes part and all fail if one does (the resume loop; a lone reader must not wait)."""
    error = None
    try:
      self.check_layout(step, abstract_state)
    except CheckpointMismatchError:
      raise  # the same files on every process: every process raises it
    except CheckpointError as e:  # unreadable metadata: damage, decided together below
      error = e
    items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    data_dir = os.path.join(self.directory, str(step), "data")
    foreign = None  # iterator state files written by another number of processes
    if data_iterator is not None and os.path.isdir(data_dir):
      own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
      if os.path.isfile(os.path.join(data_dir, own)):
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      else:
        foreign = sorted(glob.glob(os.path.join(data_dir, "process_*-of-*.json")))
    with _quiet_orbax_leftovers():
      try:
        if error is not None:
          raise error
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if foreign is not None:
          if not foreign:
            raise FileNotFoundError(f"{data_dir} holds no process_*-of-*.json iterator state")
          _set_iterator_state(data_iterator, foreign[0])
        bad = digest_mismatches(restored["meta"].get("digests", {}), restored["state"])
        if bad:
          raise ValueError(f"checksum mismatch in {len(bad)} array(s), e.g. {bad[0]}: the files changed after "
                           "they were saved")
      except Exception as e:  # orbax raises many types for damaged trees
        error = e
    if not (_all_agree(error is None) if agree else error is None):
      error = error or RuntimeError("another process could not restore it")
      raise CheckpointError(f"could not restore step {step} from {self.directory}: {_first_line(error)}") \
          from error
    return restored["state"], restored["meta"]

  def saved_layout(self, step: int) -> dict[str, tuple]:
    """name -> (shape, dtype) of the arrays saved in `state` of `step` (read from metadata, no array data)."""
    reader = ocp.StandardCheckpointHandler()
    try:
      saved = reader.metadata(epath.Path(os.path.join(self.directory, str(step), "state")))
    except Exception as e:  # orbax raises many types for missing or damaged metadata
      raise CheckpointError(f"could not read the array metadata of step {step} in {self.directory}: "
                            f"{_first_line(e)}") from e
    finally:
      reader.close()
    tree = saved.tree if hasattr(saved, "tree") else saved
    return {leaf_name(p): (tuple(m.shape), str(m.dtype)) for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}

  def check_layout(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointMismatchError naming the arrays whose names or shapes differ from `abstract_state`."""
    saved = self.saved_layout(step)
    want = {leaf_name(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    reshaped = [f"{n} is {saved[n][0]} there but {want[n]} here" for n in sorted(want)
                if n in saved and saved[n][0] != want[n]]
    missing = sorted(set(want) - set(saved))
    extra = sorted(set(saved) - set(want))
    if not (reshaped or missing or extra):
      return
    parts = reshaped[:2]
    if len(reshaped) > 2:
      parts.append(f"{len(reshaped) - 2} more arrays of other shapes")
    if missing:
      parts.append(f"{len(missing)} arrays of this run not in it (e.g. {missing[0]})")
    if extra:
      parts.append(f"{len(extra)} arrays not in this run (e.g. {extra[0]})")
    raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} was written by a different model: {'; '.join(parts)}. "
        "Resume with the config the run was started with (its config.json), or use a new --workdir")

  def _move_aside(self, steps: list[int]) -> list[str]:
    """Renames damaged step folders to `damaged_<step>` (process 0; the others wait) and forgets them."""
    targets = []
    for step in steps:
      target = os.path.join(self.directory, f"damaged_{step}")
      n = 1
      while os.path.exists(target) or target in targets:
        target = os.path.join(self.directory, f"damaged_{step}_{n}")
        n += 1
      targets.append(target)
    barrier = f"maskseg_move_aside_{'_'.join(map(str, steps))}"
    wait_for_all_processes(barrier + "_start")  # every process has looked before any rename
    if jax.process_index() == 0:
      for step, target in zip(steps, targets):
        os.rename(os.path.join(self.directory, str(step)), target)
    wait_for_all_processes(barrier + "_done")
    self.manager.reload()
    return targets

  def restore_as_saved(self, step: int | None = None):
    """Restores `state` with the shapes and dtypes it was saved with, on this process's first device.

    For reading weights into a different model (fine-tuning, stage chaining) whatever mesh wrote them: a
    restore without a target would try to rebuild the writer's device topology and fail on another one.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    path = os.path.join(self.directory, str(step), "state")
    reader = ocp.StandardCheckpointHandler()
    try:
      saved = reader.metadata(epath.Path(path))
    except Exception as e:  # orbax raises many types for missing or damaged metadata
      raise CheckpointError(f"could not read the array metadata of step {step} in {self.directory}: {e}") from e
    finally:
      reader.close()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = saved.tree if hasattr(saved, "tree") else saved
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return self.restore(abstract, step=step)

  def read_state(self, step: int | None = None):
    """The saved state as host arrays, without a target layout (inspection, tests, weight transfer)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                   meta=ocp.args.JsonRestore()))
    bad = digest_mismatches(restored["meta"].get("digests", {}), restored["state"])
    if bad:
      raise CheckpointError(f"step {step} in {self.directory} is damaged: checksum mismatch in {len(bad)} "
                            f"array(s), e.g. {bad[0]}")
    return restored["state"]

  def close(self) -> None:
    self.manager.close()


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
  """Blocks until every process reaches barrier `name` (a coordination-service barrier, not a collective; a
  no-op with one process). Processes finish building at different times, and on CPU the first gloo collective
  gives up after 30 s, so multi-process runs meet here before their first collective."""
  ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)


def _set_iterator_state(iterator, path: str) -> None:
  """What grain's Orbax handler does on restore, for a state file of another process count."""
  with open(path) as f:
    text = f.read()
  iterator.set_state(json.loads(text) if isinstance(iterator, grain.DatasetIterator) else text.encode())
  start = getattr(iterator, "start_prefetch", None)
  if start is not None:
    start()


def abstract_like(tree):
  """Shape/dtype/sharding description of a pytree of arrays, for restoring into the same layout."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
