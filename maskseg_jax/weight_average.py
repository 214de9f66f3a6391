"""An exponential moving average of the weights (`train.ema_decay`, this project's extension; 0 = off).

With a decay d > 0 the train state holds `ema`, a copy of `params` that every step moves toward the new
parameters: ema <- d_t x ema + (1 - d_t) x params, with d_t = min(d, (1 + t) / (10 + t)) at step t so the
random initial weights are forgotten within the first steps (a plain d = 0.999 would keep 11% of them after
2200 steps). Evaluation, completion, prediction and `model.init_from` then use the average instead of the last
step's weights (`for_inference`). Batch statistics are running averages already and are not averaged again.
The average lives in the checkpointed state, so a resumed run continues the same average.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from maskseg_jax.errors import ConfigError

KEY = "ema"


def check_decay(decay: float) -> float:
  decay = float(decay)
  if not 0.0 <= decay < 1.0:
    raise ConfigError(f"train.ema_decay={decay:g}; expected 0 (off) or a decay in (0, 1), e.g. 0.999")
  return decay


def attach(state: dict, decay: float) -> dict:
  """`state` with an `ema` copy of its params when `decay` > 0 (own buffers: the state is donated)."""
  if check_decay(decay) <= 0.0 or KEY in state:
    return state
  return {**state, KEY: jax.tree.map(jnp.copy, state["params"])}


def step_decay(step: jax.Array, decay: float) -> jax.Array:
  """The decay used at (0-based) step `step`: min(decay, (1 + t) / (10 + t))."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def averaging(step_fn, decay: float):
  """A train step that also updates the weight average (the task's own step never sees `ema`)."""
  if check_decay(decay) <= 0.0:
    return step_fn

  def step(state, batch, rng):
    inner = {k: v for k, v in state.items() if k != KEY}
    new_state, metrics = step_fn(inner, batch, rng)
    d = step_decay(state["step"], decay)
    new_state = dict(new_state)
    new_state[KEY] = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), state[KEY],
                                  new_state["params"])
    return new_state, metrics
  return step


def for_inference(state: dict) -> dict:
  """The state inference should use: params replaced by the weight average when the state has one."""
  if KEY not in state:
    return state
  return {**{k: v for k, v in state.items() if k != KEY}, "params": state[KEY]}
