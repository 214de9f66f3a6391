"""FCN with a dilated ResNet, laid out as torchvision's fcn_resnet50: the plain baseline the other decoders beat."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from maskseg_jax.models.resnet import ConvBNReLU, ResNet, conv, logits_at, make_dropout, scaled


class FCN(nnx.Module):
  """`model(x, train=...)` -> float32 logits [B, H, W, num_classes]; head 3x3 conv (512) -> dropout -> 1x1."""

  def __init__(self, num_classes: int, *, depth: int = 50, width: float = 1.0, deep_stem: bool = False,
               output_stride: int = 8, dropout: float = 0.1, dtype: Any = None, rngs: nnx.Rngs):
    self.num_classes = num_classes
    self.backbone = ResNet(depth, width=width, deep_stem=deep_stem, output_stride=output_stride, dtype=dtype,
                           rngs=rngs)
    c = scaled(512, width)
    self.block = ConvBNReLU(self.backbone.channels["stride32"], c, 3, dtype=dtype, rngs=rngs)
    self.dropout = make_dropout(dropout, rngs)
    self.classifier = conv(c, num_classes, 1, bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.block(self.backbone(x, train=train)["stride32"], train=train)
    y = self.dropout(y, deterministic=not train)
    return logits_at(self.classifier(y), x.shape[1:3])
