"""S4MIM class-wise mask-induced feature aggregation: prototypes, their EMA memory and the cosine pull.

Prototypes are built from *visible* positions and pull *masked* positions of the same pseudo-class, so
the features learn to infer a region's class from its visible neighbours. Prototype sums are plain sums
over the (global, sharded) batch, so under jit they are already global without any explicit all-reduce.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def resize_nearest(x, size: tuple[int, int]):
  """Nearest (pixel-centre aligned) resize of [B,H,W,...] arrays of any dtype, e.g. labels to `fea`."""
  h_in, w_in = x.shape[1:3]
  h, w = size
  rows = np.minimum(((np.arange(h) + 0.5) * h_in / h).astype(np.int32), h_in - 1)
  cols = np.minimum(((np.arange(w) + 0.5) * w_in / w).astype(np.int32), w_in - 1)
  return x[:, rows][:, :, cols]


def _weights(conf, valid, tau: float):
  conf = jax.lax.stop_gradient(conf.astype(jnp.float32))
  return conf * (valid & (conf >= tau)).astype(jnp.float32)


def class_prototypes(fea, yhat, conf, valid, num_classes: int, *, tau: float = 0.0):
  """Confidence-weighted feature sums per class over `valid` positions with conf >= tau.

  fea: [B,h,w,D]; yhat: int[B,h,w]; conf: float[B,h,w]; valid: bool[B,h,w] (visible, not ignored).
  Returns (proto_sum [C,D], weight_sum [C]); the prototype is proto_sum / weight_sum. No gradient flows:
  prototypes are state, not parameters.
  """
  w = _weights(conf, valid, tau)
  onehot = jax.nn.one_hot(yhat, num_classes, dtype=jnp.float32) * w[..., None]
  fea = jax.lax.stop_gradient(fea.astype(jnp.float32))
  # Per-sample sums first, then a plain batch sum: contracting the sharded batch axis inside einsum is
  # ambiguous under an Explicit mesh, a reduction is not.
  per_sample = jnp.einsum("bhwc,bhwd->bcd", onehot, fea)
  return jnp.sum(per_sample, axis=0), jnp.sum(onehot, axis=(0, 1, 2))


def ema_update(memory, proto_sum, weight_sum, mu: float = 0.99):
  """memory <- mu memory + (1 - mu) proto for classes present in the batch (weight_sum > 0) only."""
  present = weight_sum > 0
  proto = proto_sum / jnp.where(present, weight_sum, 1.0)[:, None]
  new = mu * memory + (1.0 - mu) * proto
  return jnp.where(present[:, None], new, memory).astype(memory.dtype)


def aggregation_loss(fea, yhat, conf, masked_valid, memory, *, tau: float = 0.0, eps: float = 1e-8):
  """Confidence-weighted mean over masked confident positions of 1 - cos(fea_i, sg(memory[yhat_i])).

  Positions whose class memory is still all zeros (never seen) are skipped: the cosine is undefined there.
  Returns (sum of weighted distances, sum of weights).
  """
  memory = jax.lax.stop_gradient(memory.astype(jnp.float32))
  # One-hot matmul instead of memory[yhat]: a gather of a replicated table by batch-sharded indices needs
  # an explicit out_sharding under an Explicit mesh, a matmul does not, and C is small.
  target = jnp.einsum("bhwc,cd->bhwd", jax.nn.one_hot(yhat, memory.shape[0], dtype=jnp.float32), memory)
  fea = fea.astype(jnp.float32)
  t_sq = jnp.sum(jnp.square(target), -1)
  # max() inside the sqrt keeps the gradient finite at an all-zero feature (a ReLU output can be one).
  denom = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(fea), -1) * t_sq, eps * eps))
  cos = jnp.sum(fea * target, -1) / denom
  w = _weights(conf, masked_valid & (t_sq > 0), tau)
  return jnp.sum(w * (1.0 - cos)), jnp.sum(w)
