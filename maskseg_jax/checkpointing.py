"""The only module that imports Orbax: one CheckpointManager per run.

A checkpoint holds `state` (params, batch statistics, optimizer, step and method state such as prototypes),
`data` (the grain iterator's position, one file per process) and `meta` (the step and the metrics at that
step). Orbax writes each step into a temporary folder and renames it when complete, so a killed run never
leaves a half-written step that looks finished. Preservation: the last `keep` steps plus the best by
`best_metric`.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from maskseg_jax.errors import CheckpointError


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 2, best_metric: str | None = None, best_mode: str = "max"):
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

  def restore(self, abstract_state: Any, data_iterator=None, step: int | None = None):
    """Restores into the shapes, dtypes and shardings of `abstract_state`; moves the iterator in place."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    has_data = os.path.isdir(os.path.join(self.directory, str(step), "data"))
    if data_iterator is not None and has_data:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for damaged or mismatched trees
      raise CheckpointError(f"could not restore step {step} from {self.directory}: {e}") from e
    return restored["state"], restored["meta"]

  def restore_as_saved(self, step: int | None = None):
    """Restores `state` with the shapes and dtypes it was saved with, on this process's first device.

    For reading weights into a different model (fine-tuning, stage chaining) whatever mesh wrote them: a
    restore without a target would try to rebuild the writer's device topology and fail on another one.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    path = os.path.join(self.directory, str(step), "state")
    try:
      with ocp.StandardCheckpointer() as reader:
        saved = reader.metadata(path).item_metadata
    except Exception as e:  # orbax raises many types for missing or damaged metadata
      raise CheckpointError(f"could not read the array metadata of step {step} in {self.directory}: {e}") from e
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


def abstract_like(tree):
  """Shape/dtype/sharding description of a pytree of arrays, for restoring into the same layout."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
