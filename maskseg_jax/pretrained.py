"""Loading trained weights into a freshly built model: fine-tuning and selective-masking stage chaining.

A checkpoint's `state` holds `params` and `batch_stats` as nested dicts keyed by module path. Loading copies
every variable of the model from the checkpoint by path, except those under the attributes in `skip` (the
output layer, which fine-tuning replaces: `head` in the U-Net, `classifier` in DeepLabV3+/FCN), which keep
their fresh initialization. A variable the checkpoint lacks, or holds with another shape, is a CheckpointError
naming the checkpoint and the variable: silently keeping a random layer would make a fine-tuning result
meaningless.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskseg_jax import checkpointing
from maskseg_jax.errors import CheckpointError

OUTPUT_LAYERS = ("head", "classifier")  # what fine-tuning replaces
_STAGE_DIR = re.compile(r"^stage_(\d+)$")


def _has_steps(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def resolve_checkpoint_dir(path: str) -> str:
  """The Orbax checkpoint folder of `path`: a run folder (its `checkpoints/`), a checkpoints folder itself, or
  a selective-masking pretraining folder (the `checkpoints/` of its last finished `stage_k`)."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise CheckpointError(f"model.init_from={path} does not exist; expected a run folder with checkpoints/")
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints")
  stages = sorted((int(m.group(1)), name) for name in os.listdir(path) if (m := _STAGE_DIR.match(name)))
  if stages:
    finished = [name for _, name in stages if os.path.isfile(os.path.join(path, name, "done"))]
    if not finished:
      raise CheckpointError(f"selective-masking pretraining folder {path} has no finished stage (no "
                            "stage_k/done); finish the pretraining run first")
    if finished[-1] != stages[-1][1]:
      raise CheckpointError(f"selective-masking pretraining folder {path} is unfinished: {finished[-1]} is the "
                            f"last finished stage but {stages[-1][1]} exists; finish the pretraining run first")
    return os.path.join(path, finished[-1], "checkpoints")
  if _has_steps(path):
    return path
  raise CheckpointError(f"no checkpoint at {path}: expected a run folder with checkpoints/, a checkpoints folder "
                        "with numbered steps, or a selective-masking pretraining folder with stage_k/ folders")


def read_weights(path: str) -> tuple[dict, dict, str]:
  """-> (params, batch_stats, checkpoint folder): the last step of `path`'s checkpoint, as saved."""
  directory = resolve_checkpoint_dir(path)
  ckpt = checkpointing.Checkpointer(directory)
  try:
    if ckpt.latest_step() is None:
      raise CheckpointError(f"no checkpoint in {directory} (model.init_from={path})")
    state, _ = ckpt.restore_as_saved()
  finally:
    ckpt.close()
  missing = [k for k in ("params", "batch_stats") if k not in state]
  if missing:
    raise CheckpointError(f"checkpoint in {directory} has no {missing} in its state; expected a model checkpoint")
  return state["params"], state["batch_stats"], directory


def _key(entry) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def _name(path) -> str:
  """'backbone/layer1/0/conv1/kernel' for a tree path; the trailing 'value' of NNX variables is dropped."""
  keys = [_key(k) for k in path]
  if keys and keys[-1] == "value":
    keys = keys[:-1]
  return "/".join(keys)


def flatten(tree) -> dict[str, jax.Array]:
  """{variable path: array} of a params/batch-stats tree, saved (nested dicts) or live (nnx.State) alike."""
  return {_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_into(model: nnx.Module, path: str, *, skip: Sequence[str] = OUTPUT_LAYERS) -> dict[str, list[str]]:
  """Copies params and batch statistics from `path`'s last checkpoint into `model` (in place).

  Variables under a top-level attribute named in `skip` keep their initialization. Returns
  {"loaded": [...], "kept": [...]} variable paths, so callers can report what was transferred.
  """
  saved_params, saved_stats, directory = read_weights(path)
  saved = {**flatten(saved_params), **flatten(saved_stats)}
  report = {"loaded": [], "kept": []}

  def pick(tree_path, leaf):
    name = _name(tree_path)
    if name.split("/")[0] in skip:
      report["kept"].append(name)
      return leaf
    if name not in saved:
      raise CheckpointError(f"checkpoint {directory} has no variable {name!r} that the model needs (was it "
                            "written by another model type or backbone?)")
    value = saved[name]
    if tuple(value.shape) != tuple(leaf.shape):
      raise CheckpointError(f"checkpoint {directory} holds {name!r} with shape {tuple(value.shape)}, the model "
                            f"expects {tuple(leaf.shape)} (different model.width, backbone or channels?)")
    report["loaded"].append(name)
    return jnp.asarray(np.asarray(value), leaf.dtype)

  for kind in (nnx.Param, nnx.BatchStat):
    nnx.update(model, jax.tree_util.tree_map_with_path(pick, nnx.state(model, kind)))
  return report
