"""The only module that imports Orbax: one CheckpointManager per run.

A checkpoint holds `state` (params, batch statistics, optimizer, step and method state such as prototypes),
`data` (the grain iterator's position, one file per process) and `meta` (the step and the metrics at that
step). Orbax writes each step into a temporary folder and renames it when complete, so a killed run never
leaves a half-written step that looks finished; a leftover temporary folder is ignored and removed when the
next run opens the folder. A step damaged later (truncated or deleted files) fails to restore: `restore()`
then says so, falls back to the previous step and moves the damaged one aside to `damaged_<step>` (never
deleting it). Iterator states count global batches (see data/pipeline.py), so a checkpoint written by N
processes restores with M processes: a process without its own state file takes process 0's.
Preservation: the last `keep` steps plus the best by `best_metric`.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from maskseg_jax.errors import CheckpointError


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
    items = dict(state=ocp.args.StandardSave(state),
                 meta=ocp.args.JsonSave({"step": int(step), "metrics": usable or {}}))
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=usable, force=True)
    self.manager.wait_until_finished()

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
        result = self._restore_step(s, abstract_state, data_iterator)
      except CheckpointError as e:
        failed.append((s, e))
        cause = str(e.__cause__ or e).splitlines()[0][:300]
        warn(f"warning: checkpoint step {s} in {self.directory} is damaged or does not match this run "
             f"({type(e.__cause__ or e).__name__}: {cause}); trying the previous step")
        continue
      if failed:
        moved = self._move_aside([f for f, _ in failed])
        warn(f"warning: resumed from step {s} instead of the damaged step(s) {[f for f, _ in failed]}; moved "
             f"them aside to {', '.join(moved)} (inspect or delete them yourself)")
      return result
    details = "; ".join(f"step {f}: {str(e.__cause__ or e).splitlines()[0][:200]}" for f, e in failed)
    raise CheckpointError(f"no checkpoint in {self.directory} could be restored ({details}). If the model or "
                          "config changed, use a new --workdir; otherwise the checkpoints are damaged")

  def _restore_step(self, step: int, abstract_state: Any, data_iterator=None):
    items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    data_dir = os.path.join(self.directory, str(step), "data")
    foreign = None  # iterator state files written by another number of processes
    if data_iterator is not None and os.path.isdir(data_dir):
      own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
      if os.path.isfile(os.path.join(data_dir, own)):
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      else:
        foreign = sorted(glob.glob(os.path.join(data_dir, "process_*-of-*.json")))
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
      if foreign is not None:
        if not foreign:
          raise FileNotFoundError(f"{data_dir} holds no process_*-of-*.json iterator state")
        _set_iterator_state(data_iterator, foreign[0])
    except Exception as e:  # orbax raises many types for damaged or mismatched trees
      raise CheckpointError(f"could not restore step {step} from {self.directory}: {e}") from e
    return restored["state"], restored["meta"]

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
    return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

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
