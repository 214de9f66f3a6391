"""U-Net on a ResNet-34 encoder, the selective-masking model.

The same network is pretrained to reconstruct masked images (3-channel head, no activation) and then fine-tuned
for segmentation, so the head is one replaceable 1x1 conv (`replace_head`) and everything else carries over.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from maskseg_jax.models.resnet import ConvBNReLU, ResNet, conv, logits_at, make_dropout, resize_to, scaled


class DecoderBlock(nnx.Module):
  """Upsample to the skip's size, concatenate the skip, two 3x3 conv-BN-ReLU."""

  def __init__(self, in_ch: int, skip_ch: int, out_ch: int, *, dtype: Any, rngs: nnx.Rngs):
    self.conv1 = ConvBNReLU(in_ch + skip_ch, out_ch, 3, dtype=dtype, rngs=rngs)
    self.conv2 = ConvBNReLU(out_ch, out_ch, 3, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, skip: jax.Array, *, train: bool) -> jax.Array:
    # Resizing to the skip's exact size (not x2) keeps sizes that are not multiples of 32 working.
    x = jnp.concatenate([resize_to(x, skip.shape[1:3]), skip], axis=-1)
    return self.conv2(self.conv1(x, train=train), train=train)


class UNet(nnx.Module):
  """`model(x, train=...)` -> float32 [B, H, W, out_channels] (class logits, or RGB for reconstruction)."""

  def __init__(self, out_channels: int, *, depth: int = 34, width: float = 1.0, deep_stem: bool = False,
               dropout: float = 0.2, dtype: Any = None, rngs: nnx.Rngs):
    self.out_channels = out_channels
    self.dtype = dtype
    self.backbone = ResNet(depth, width=width, deep_stem=deep_stem, output_stride=32, dtype=dtype, rngs=rngs)
    ch = self.backbone.channels
    d16, d8, d4 = scaled(256, width), scaled(128, width), scaled(64, width)
    self.up16 = DecoderBlock(ch["stride32"], ch["stride16"], d16, dtype=dtype, rngs=rngs)
    self.up8 = DecoderBlock(d16, ch["stride8"], d8, dtype=dtype, rngs=rngs)
    self.up4 = DecoderBlock(d8, ch["stride4"], d4, dtype=dtype, rngs=rngs)
    self.dropout = make_dropout(dropout, rngs)
    self.head = conv(d4, out_channels, 1, bias=True, dtype=dtype, rngs=rngs)

    self.feature_channels = d4

  # The semi-supervised split (as DeepLabV3+'s): encode -> (encoder maps, fine to coarse), decode -> the stride-4
  # map, classify -> logits at stride 4. UniMatch's feature perturbation then drops channels of every encoder map.
  def encode(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, ...]:
    """-> the encoder's stride-4, 8, 16 and 32 maps (the skips and the bottom)."""
    f = self.backbone(x, train=train)
    return f["stride4"], f["stride8"], f["stride16"], f["stride32"]

  def decode(self, s4: jax.Array, s8: jax.Array, s16: jax.Array, s32: jax.Array, *, train: bool) -> jax.Array:
    """-> the stride-4 decoder map the head reads (`feature_channels` wide, before dropout)."""
    y = self.up16(s32, s16, train=train)
    y = self.up8(y, s8, train=train)
    return self.up4(y, s4, train=train)

  def classify(self, fused: jax.Array) -> jax.Array:
    """-> logits at the decoder map's (stride-4) resolution; the supervised path's dropout is not applied."""
    return self.head(fused)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.dropout(self.decode(*self.encode(x, train=train), train=train), deterministic=not train)
    return logits_at(self.head(y), x.shape[1:3])


def replace_head(model: UNet, out_channels: int, rngs: nnx.Rngs) -> UNet:
  """Gives `model` a freshly initialized head with `out_channels` outputs (in place; returns `model`).

  Used to fine-tune a reconstruction-pretrained U-Net for N-class segmentation: the encoder, decoder and
  BatchNorm statistics are kept as they are.
  """
  model.head = conv(model.head.in_features, out_channels, 1, bias=True, dtype=model.dtype, rngs=rngs)
  model.out_channels = out_channels
  return model
