"""DeepLabV3+ as used by UniMatch, split into encode / decode / classify.

The split exists for semi-supervised methods: UniMatch's feature perturbation runs the decoder a second time on
channel-dropped `(low, high)` features (`perturb`), and S4MIM needs the fused stride-4 map before the classifier.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from maskseg_jax.models.resnet import ConvBNReLU, ResNet, conv, logits_at, make_dropout, resize_to, scaled


class ASPP(nnx.Module):
  """Atrous spatial pyramid pooling: a 1x1 branch, three dilated 3x3 branches and image pooling."""

  def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...], *, dropout: float, dtype: Any,
               rngs: nnx.Rngs):
    self.branches = nnx.List([ConvBNReLU(in_ch, out_ch, 1, dtype=dtype, rngs=rngs)] + [
        ConvBNReLU(in_ch, out_ch, 3, dilation=r, dtype=dtype, rngs=rngs) for r in rates])
    self.pool = ConvBNReLU(in_ch, out_ch, 1, dtype=dtype, rngs=rngs)
    self.project = ConvBNReLU(out_ch * (len(rates) + 2), out_ch, 1, dtype=dtype, rngs=rngs)
    # Dropout after the projection (as torchvision's / TF DeepLab's ASPP) keeps `decode`'s fused map, which
    # S4MIM uses as features, free of dropout and `classify` free of a train flag.
    self.dropout = make_dropout(dropout, rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    outs = [b(x, train=train) for b in self.branches]
    pooled = self.pool(jnp.mean(x, axis=(1, 2), keepdims=True), train=train)
    outs.append(jnp.broadcast_to(pooled, x.shape[:3] + pooled.shape[3:]))
    y = self.project(jnp.concatenate(outs, axis=-1), train=train)
    return self.dropout(y, deterministic=not train)


class DeepLabV3Plus(nnx.Module):
  """DeepLabV3+ on a ResNet: `model(x, train=...)` -> float32 logits [B, H, W, num_classes]."""

  def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, deep_stem: bool = True,
               output_stride: int = 16, dropout: float = 0.1, fp_dropout: float = 0.5, align_corners: bool = False,
               dtype: Any = None, rngs: nnx.Rngs):
    self.num_classes = num_classes
    self.align_corners = align_corners  # bilinear grid of both upsamplings (UniMatch: True)
    self.backbone = ResNet(depth, width=width, deep_stem=deep_stem, output_stride=output_stride, dtype=dtype,
                           rngs=rngs)
    # Rates 6/12/18 are defined at output stride 16; keep the same receptive field at other strides.
    self.rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
    c = scaled(256, width)
    self.aspp = ASPP(self.backbone.channels["stride32"], c, self.rates, dropout=dropout, dtype=dtype, rngs=rngs)
    c_low = scaled(48, width)
    self.reduce = ConvBNReLU(self.backbone.channels["stride4"], c_low, 1, dtype=dtype, rngs=rngs)
    self.fuse = nnx.List([ConvBNReLU(c + c_low, c, 3, dtype=dtype, rngs=rngs),
                          ConvBNReLU(c, c, 3, dtype=dtype, rngs=rngs)])
    self.classifier = conv(c, num_classes, 1, bias=True, dtype=dtype, rngs=rngs)
    # UniMatch's feature perturbation (Dropout2d: whole channels); only used through `perturb`.
    self.fp_dropout = make_dropout(fp_dropout, rngs, broadcast_dims=(1, 2))
    self.feature_channels = c

  def encode(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """-> (low: stride-4 features, high: the ASPP input at the output stride)."""
    feats = self.backbone(x, train=train)
    return feats["stride4"], feats["stride32"]

  def perturb(self, low: jax.Array, high: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Channel-wise dropout of both feature levels (always on; for UniMatch's feature-perturbed branch)."""
    return self.fp_dropout(low, deterministic=False), self.fp_dropout(high, deterministic=False)

  def decode(self, low: jax.Array, high: jax.Array, *, train: bool) -> jax.Array:
    """-> the fused stride-4 map (`feature_channels` wide) that the classifier reads."""
    high = resize_to(self.aspp(high, train=train), low.shape[1:3], align_corners=self.align_corners)
    y = jnp.concatenate([self.reduce(low, train=train), high], axis=-1)
    for unit in self.fuse:
      y = unit(y, train=train)
    return y

  def classify(self, fused: jax.Array) -> jax.Array:
    """-> logits at the fused map's (stride-4) resolution, in the compute dtype."""
    return self.classifier(fused)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    low, high = self.encode(x, train=train)
    return logits_at(self.classify(self.decode(low, high, train=train)), x.shape[1:3],
                     align_corners=self.align_corners)
