"""Optimizer and learning-rate schedule from `config.optim`.

Weight decay is coupled L2 (`add_decayed_weights` before the optimizer, as PyTorch's SGD/Adam
`weight_decay`) for `sgd`/`adam`, decoupled for `adamw`. Parameters outside the `backbone` attribute get
`head_lr_mult` times the learning rate, by scaling their updates after the optimizer: for SGD with momentum
and for Adam this is exactly a larger learning rate. Reduce-on-plateau reads the `value=loss` extra argument
that every train step passes to `update`.
"""

from __future__ import annotations

from typing import Callable

import jax
import optax

from maskseg_jax.errors import ConfigError


def _constant(lr, total_steps, oc):
  return optax.constant_schedule(lr)


def _poly(lr, total_steps, oc):
  return optax.polynomial_schedule(lr, 0.0, oc.poly_power, max(total_steps - oc.warmup_steps, 1),
                                   transition_begin=0)


def _cosine(lr, total_steps, oc):
  return optax.cosine_decay_schedule(lr, max(total_steps - oc.warmup_steps, 1), alpha=0.01)


SCHEDULES: dict[str, Callable] = {
    "constant": _constant, "poly": _poly, "cosine": _cosine, "plateau": _constant}


def learning_rate(oc, total_steps: int):
  """Step -> learning rate (before any plateau scaling)."""
  if oc.schedule not in SCHEDULES:
    raise ConfigError(f"optim.schedule={oc.schedule!r} is unknown; expected one of {sorted(SCHEDULES)}")
  main = SCHEDULES[oc.schedule](oc.lr, total_steps, oc)
  if oc.warmup_steps <= 0:
    return main
  warm = optax.linear_schedule(0.01 * oc.lr, oc.lr, oc.warmup_steps)
  return optax.join_schedules([warm, main], [oc.warmup_steps])


def _base(oc, lr):
  if oc.name == "sgd":
    return optax.chain(optax.add_decayed_weights(oc.weight_decay), optax.sgd(lr, momentum=oc.momentum or None))
  if oc.name == "adam":
    return optax.chain(optax.add_decayed_weights(oc.weight_decay), optax.adam(lr, b1=0.9, b2=0.999))
  if oc.name == "adamw":
    return optax.adamw(lr, weight_decay=oc.weight_decay)
  raise ConfigError(f"optim.name={oc.name!r} is unknown; expected one of ['adam', 'adamw', 'sgd']")


def param_labels(params):
  """'backbone' for parameters under a `backbone` attribute, 'head' for the rest."""
  def label(path, _):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return "backbone" if "backbone" in names else "head"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(oc, total_steps: int, params) -> optax.GradientTransformationExtraArgs:
  parts = []
  if oc.grad_clip and oc.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(oc.grad_clip))
  parts.append(_base(oc, learning_rate(oc, total_steps)))
  if oc.head_lr_mult != 1.0:
    labels = param_labels(params)
    parts.append(optax.multi_transform(
        {"backbone": optax.identity(), "head": optax.scale(oc.head_lr_mult)}, labels))
  if oc.schedule == "plateau":
    parts.append(optax.contrib.reduce_on_plateau(
        factor=oc.plateau_factor, patience=oc.plateau_patience, rtol=oc.plateau_threshold,
        accumulation_size=max(int(oc.get("plateau_accumulation", 1)), 1)))
  return optax.chain(*parts)
