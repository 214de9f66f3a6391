"""What a method hands to the training loop, and the NNX plumbing every method shares.

A method module exposes `build(config, mesh, workdir) -> Task`. The train state is a plain dict pytree
`{"step", "params", "batch_stats", "opt", "extra"}` (extra: method state such as EMA prototypes or class
weights), so Orbax saves it as is and `jax.jit` shards it with one rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass
class EvalResult:
  scalars: dict[str, float]
  images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def tracked(batches, progress: Callable | None, total: int):
  """Yields eval `batches` and tells `progress(images done, total)` after each (valid rows over all processes),
  so long evaluations report where they are (`MetricWriter.eval_progress`)."""
  done = 0
  for local in batches:
    yield local
    done = min(int(total), done + int(np.sum(local["valid"])) * jax.process_count())
    if progress is not None:
      progress(done, int(total))


@dataclasses.dataclass
class Task:
  state: dict                                   # initial train state (host arrays)
  train_step: Callable                          # pure: (state, batch, rng) -> (state, metrics)
  train_iter: Any                               # grain iterator of process-local numpy batches
  evaluators: Sequence[Any] = ()                # objects with `name` and `run(state, progress=None) -> EvalResult`
  images_per_step: int = 0                      # global images consumed by one step (for images/s)
  predict: Callable | None = None               # mode=predict: (state) -> None (writes outputs)
  extra_modes: dict[str, Callable] = dataclasses.field(default_factory=dict)  # mode name -> fn(state)
  warmup_step: Callable | None = None           # optional step run instead of train_step while the state's
  warmup_steps: int = 0                         # step < warmup_steps (same state structure and metric keys)


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """The static half of a split model: merge it with params and batch stats inside traced code."""
  graphdef: Any
  rest: Any  # every non-trainable, non-batch-stat variable (RNG streams): constant across steps

  def merge(self, params, batch_stats) -> nnx.Module:
    return nnx.merge(self.graphdef, params, batch_stats, self.rest, copy=True)


def split_model(model: nnx.Module):
  """-> (ModelDef, params, batch_stats)."""
  graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  return ModelDef(graphdef, rest), params, batch_stats


def batch_stats_of(model: nnx.Module):
  return nnx.state(model, nnx.BatchStat)


def new_state(params, batch_stats, tx, extra: dict | None = None) -> dict:
  return dict(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt=tx.init(params),
              extra=extra or {})


def apply_gradients(state: dict, tx, grads, loss, batch_stats, extra: dict | None = None) -> dict:
  """One optimizer update; `value=loss` feeds reduce-on-plateau when the chain has it."""
  import optax
  updates, opt = tx.update(grads, state["opt"], state["params"], value=loss)
  params = optax.apply_updates(state["params"], updates)
  return dict(step=state["step"] + 1, params=params, batch_stats=batch_stats, opt=opt,
              extra=state["extra"] if extra is None else extra)


def current_lr_scale(opt_state) -> jax.Array:
  """The reduce-on-plateau scale inside an optimizer state (1.0 when there is none)."""
  for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: hasattr(x, "scale")):
    if hasattr(leaf, "scale"):
      return jnp.asarray(leaf.scale, jnp.float32)
  return jnp.ones((), jnp.float32)


def reseed_dropout(model: nnx.Module, key) -> None:
  """Points every dropout stream of `model` at this step's key (no-op for models without dropout)."""
  has_stream = any(isinstance(v, nnx.RngStream) and getattr(v, "tag", None) == "dropout"
                   for _, v in nnx.iter_graph(model))
  if has_stream:
    nnx.reseed(model, dropout=key)
