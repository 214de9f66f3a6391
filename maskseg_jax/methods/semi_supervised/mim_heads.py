"""S4MIM class-wise reconstruction heads and their MAE-style pixel target.

`rec = sum_c Head_c(fea * Y_c)` with one light head per class: for a one-hot `Y` this is "each pixel
through its own class's head", which we compute as one einsum instead of C separate 1x1 convs, so the
cost does not grow with C kernel launches and the whole thing is one matmul for XLA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def _reshape(x, shape):
  """Reshape that keeps only the batch axis' sharding; an Explicit mesh cannot infer it for split axes."""
  sharding = jax.typeof(x).sharding
  if not any(t == jax.sharding.AxisType.Explicit for t in getattr(sharding.mesh, "axis_types", ())):
    return x.reshape(shape)
  spec = jax.sharding.PartitionSpec(sharding.spec[0] if sharding.spec else None, *[None] * (len(shape) - 1))
  return jnp.reshape(x, shape, out_sharding=sharding.update(spec=spec))


def pixel_shuffle(x, patch: int, channels: int):
  """Depth-to-space: [B,h,w,p*p*c] (channel order p_row, p_col, c) -> [B,h*p,w*p,c]."""
  b, h, w, _ = x.shape
  x = _reshape(x, (b, h, w, patch, patch, channels))
  return _reshape(x.transpose(0, 1, 3, 2, 4, 5), (b, h * patch, w * patch, channels))


class ClassWiseReconstruction(nnx.Module):
  """One 1x1-conv head per class (weights [C, D, 3*p*p], bias [C, 3*p*p]) + pixel shuffle to full size.

  The bias is gated by Y like the weights, i.e. `sum_c Y_c Head_c(fea)`; with a literal `Head_c(fea * Y_c)`
  every pixel would get the sum of all C biases, which is only a reparametrization of one shared bias.
  """

  def __init__(self, in_dim: int, num_classes: int, patch: int = 4, out_channels: int = 3, *, rngs: nnx.Rngs):
    self.patch = patch
    self.out_channels = out_channels
    out = out_channels * patch * patch
    init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2,
                                                batch_axis=0)
    self.kernel = nnx.Param(init(rngs.params(), (num_classes, in_dim, out), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_classes, out), jnp.float32))

  def __call__(self, fea, onehot):
    """fea [B,h,w,D], onehot [B,h,w,C] (soft weights also work) -> rec [B, h*p, w*p, out_channels]."""
    onehot = onehot.astype(fea.dtype)
    flat = jnp.einsum("bhwd,bhwc,cdo->bhwo", fea, onehot, self.kernel[...].astype(fea.dtype))
    flat = flat + jnp.einsum("bhwc,co->bhwo", onehot, self.bias[...].astype(fea.dtype))
    return pixel_shuffle(flat, self.patch, self.out_channels)


def norm_pix_target(image, patch: int, eps: float = 1e-6):
  """MAE norm_pix target: each patch x patch block normalized by its own mean/variance (over pixels and
  channels), so reconstruction learns structure rather than the block's brightness. [B,H,W,C] -> same shape.

  H, W need not be multiples of `patch`: edge blocks use only their real pixels. Gradient is stopped.
  """
  image = jax.lax.stop_gradient(image.astype(jnp.float32))
  b, h, w, c = image.shape
  gh, gw = -(-h // patch), -(-w // patch)
  pad = ((0, 0), (0, gh * patch - h), (0, gw * patch - w), (0, 0))
  x = _reshape(jnp.pad(image, pad), (b, gh, patch, gw, patch, c))
  m = jnp.pad(jnp.ones((1, h, w, 1), jnp.float32), pad).reshape(1, gh, patch, gw, patch, 1)
  n = jnp.sum(m, axis=(2, 4, 5), keepdims=True) * c
  mean = jnp.sum(x * m, axis=(2, 4, 5), keepdims=True) / n
  var = jnp.sum(jnp.square(x - mean) * m, axis=(2, 4, 5), keepdims=True) / n
  y = _reshape((x - mean) / jnp.sqrt(var + eps), (b, gh * patch, gw * patch, c))
  return y[:, :h, :w]
