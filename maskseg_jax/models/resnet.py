"""ResNet backbones (NHWC) that return every stage's features, so any decoder can pick its taps.

Layer layout and parameter counts follow torchvision's ResNet v1.5 (stride on the bottleneck's 3x3 conv), so
the width-1.0 standard-stem ResNet-50 has torchvision's 23,508,032 backbone parameters. `output_stride` 8/16
replaces the last stages' strides by dilation (DeepLab), and `deep_stem` swaps the 7x7 stem for three 3x3
convs (64-64-128, as in UniMatch / ResNet-D). Shared building blocks for the decoders also live here.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskseg_jax.errors import ConfigError

# BatchNorm keeps 10% of each new batch statistic, as PyTorch's momentum=0.1 (flax counts the other way round).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

_BLOCKS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
STAGE_NAMES = ("stride4", "stride8", "stride16", "stride32")


def scaled(channels: int, width: float) -> int:
  """Channel count under the width multiplier; at least 8 so tiny test models stay well-formed."""
  return max(8, int(channels * width))


def make_dropout(rate: float, rngs: nnx.Rngs, *, broadcast_dims: tuple[int, ...] = ()) -> nnx.Dropout:
  """Dropout whose stream is tagged 'dropout' even if `rngs` has only a default stream.

  Train steps reseed with `nnx.reseed(model, dropout=key)`, which only touches streams tagged 'dropout';
  a model built from `nnx.Rngs(0)` would otherwise carry 'default'-tagged streams that reseed skips.
  """
  if "dropout" in rngs:
    stream = rngs["dropout"]
  else:
    source = rngs["default"] if "default" in rngs else rngs["params"]
    stream = nnx.RngStream(source(), tag="dropout")
  return nnx.Dropout(rate, broadcast_dims=broadcast_dims, rngs=stream)


def conv(in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, dilation: int = 1, bias: bool = False,
         dtype: Any = None, rngs: nnx.Rngs) -> nnx.Conv:
  """Conv with symmetric PyTorch-style padding (flax 'SAME' pads stride-2 convs on one side only)."""
  pad = dilation * (kernel - 1) // 2
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                  kernel_dilation=dilation, use_bias=bias, dtype=dtype,
                  kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"), rngs=rngs)


def batch_norm(channels: int, *, dtype: Any = None, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, rngs=rngs)


class ConvBNReLU(nnx.Module):
  """conv -> BatchNorm -> ReLU, the unit every decoder here is made of."""

  def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, dilation: int = 1,
               dtype: Any = None, rngs: nnx.Rngs):
    self.conv = conv(in_ch, out_ch, kernel, stride=stride, dilation=dilation, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_ch, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))


class Downsample(nnx.Module):
  """1x1 projection shortcut used when a block changes resolution or width."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, dtype: Any, rngs: nnx.Rngs):
    self.conv = conv(in_ch, out_ch, 1, stride=stride, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_ch, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(self.conv(x), use_running_average=not train)


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, in_ch: int, planes: int, *, stride: int, dilation: int, first_dilation: int,
               dtype: Any, rngs: nnx.Rngs):
    out_ch = planes * self.expansion
    self.conv1 = conv(in_ch, planes, 3, stride=stride, dilation=first_dilation, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(planes, dtype=dtype, rngs=rngs)
    self.conv2 = conv(planes, out_ch, 3, dilation=dilation, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(out_ch, dtype=dtype, rngs=rngs)
    needs_proj = stride != 1 or in_ch != out_ch
    self.downsample = Downsample(in_ch, out_ch, stride, dtype=dtype, rngs=rngs) if needs_proj else None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    shortcut = x if self.downsample is None else self.downsample(x, train=train)
    return jax.nn.relu(y + shortcut)


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, in_ch: int, planes: int, *, stride: int, dilation: int, first_dilation: int,
               dtype: Any, rngs: nnx.Rngs):
    del dilation  # the single 3x3 conv takes the previous stage's dilation in a stage's first block, as torchvision
    out_ch = planes * self.expansion
    self.conv1 = conv(in_ch, planes, 1, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(planes, dtype=dtype, rngs=rngs)
    self.conv2 = conv(planes, planes, 3, stride=stride, dilation=first_dilation, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(planes, dtype=dtype, rngs=rngs)
    self.conv3 = conv(planes, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn3 = batch_norm(out_ch, dtype=dtype, rngs=rngs)
    needs_proj = stride != 1 or in_ch != out_ch
    self.downsample = Downsample(in_ch, out_ch, stride, dtype=dtype, rngs=rngs) if needs_proj else None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=ura))
    y = self.bn3(self.conv3(y), use_running_average=ura)
    shortcut = x if self.downsample is None else self.downsample(x, train=train)
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """ResNet-18/34/50/101 feature extractor: `__call__(x, train=...)` -> {"stride4".."stride32": features}.

  Keys name the nominal stage; with `output_stride` 8 or 16 the later stages keep the finer resolution.
  `channels[key]` gives each stage's channel count for building decoders.
  """

  def __init__(self, depth: int, *, width: float = 1.0, deep_stem: bool = False, output_stride: int = 32,
               dtype: Any = None, rngs: nnx.Rngs):
    if depth not in _BLOCKS:
      raise ConfigError(f"ResNet depth {depth!r} is not supported; expected one of {sorted(_BLOCKS)}.")
    if output_stride not in (8, 16, 32):
      raise ConfigError(f"model.output_stride={output_stride!r} is not supported; expected 8, 16 or 32.")
    kind, layers = _BLOCKS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    self.depth = depth
    self.output_stride = output_stride
    self.deep_stem = deep_stem

    if deep_stem:
      c_mid, c_out = scaled(64, width), scaled(128, width)
      self.stem = nnx.List([
          ConvBNReLU(3, c_mid, 3, stride=2, dtype=dtype, rngs=rngs),
          ConvBNReLU(c_mid, c_mid, 3, dtype=dtype, rngs=rngs),
          ConvBNReLU(c_mid, c_out, 3, dtype=dtype, rngs=rngs),
      ])
    else:
      c_out = scaled(64, width)
      self.stem = nnx.List([ConvBNReLU(3, c_out, 7, stride=2, dtype=dtype, rngs=rngs)])

    # Stages 3 and 4 (stride16/stride32) trade stride for dilation until the output stride is reached.
    dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]
    in_ch, dilation = c_out, 1
    stages = []
    channels = {}
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
      stride = 1 if i == 0 else 2
      first_dilation = dilation
      if i > 0 and dilate[i - 1]:
        dilation *= stride
        stride = 1
      p = scaled(planes, width)
      blocks = []
      for j in range(n):
        blocks.append(block(in_ch, p, stride=stride if j == 0 else 1, dilation=dilation,
                            first_dilation=first_dilation if j == 0 else dilation, dtype=dtype, rngs=rngs))
        in_ch = p * block.expansion
      stages.append(nnx.List(blocks))
      channels[STAGE_NAMES[i]] = in_ch
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.channels = channels

  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    for unit in self.stem:
      x = unit(x, train=train)
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    feats = {}
    for name, stage in zip(STAGE_NAMES, (self.layer1, self.layer2, self.layer3, self.layer4)):
      for blk in stage:
        x = blk(x, train=train)
      feats[name] = x
    return feats


def _corner_weights(n_in: int, n_out: int) -> np.ndarray:
  """float64[n_out, n_in] bilinear weights that map corner pixels onto corner pixels (PyTorch's
  align_corners=True): output i samples input i * (n_in - 1) / (n_out - 1)."""
  src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
  lo = np.clip(np.floor(src).astype(int), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  w = src - lo
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), lo), 1.0 - w)
  np.add.at(m, (np.arange(n_out), hi), w)
  return m


def _resize_corners(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Bilinear, corners aligned: two small matmuls (full precision, so accelerators do not round to bf16)."""
  mh = jnp.asarray(_corner_weights(x.shape[1], hw[0]), x.dtype)
  mw = jnp.asarray(_corner_weights(x.shape[2], hw[1]), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  return jnp.einsum("pw,bowc->bopc", mw, jnp.einsum("oh,bhwc->bowc", mh, x, precision=hi), precision=hi)


def _resize_half_pixel(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  return jax.image.resize(x, (x.shape[0], hw[0], hw[1], x.shape[3]), method="bilinear")


# align_corners -> bilinear resize: False is jax.image's half-pixel grid (torchvision's DeepLab), True the
# corner-aligned grid of UniMatch's DeepLabV3+ (F.interpolate(..., align_corners=True)).
RESIZERS = {False: _resize_half_pixel, True: _resize_corners}


def resize_to(x: jax.Array, hw: tuple[int, int], *, align_corners: bool = False) -> jax.Array:
  """Bilinear resize of NHWC `x` to spatial size `hw` (no-op when it already matches)."""
  if tuple(x.shape[1:3]) == tuple(hw):
    return x
  return RESIZERS[bool(align_corners)](x, hw)


def logits_at(x: jax.Array, hw: tuple[int, int], *, align_corners: bool = False) -> jax.Array:
  """Casts logits to at least float32 before upsampling, so bfloat16 compute still yields float32 outputs."""
  return resize_to(x.astype(jnp.promote_types(x.dtype, jnp.float32)), hw, align_corners=align_corners)


# ------------------------------------------------------------------------------------------ torch names
# torchvision / timm state-dict keys -> variable paths of `ResNet` (relative to it), so ImageNet weights from
# where users keep them load without a conversion script. The deep stem is timm's / UniMatch's layout
# (`conv1` a Sequential of conv-bn-relu x2 + conv, then `bn1`); shapes are checked by the loader.
_TORCH_STEM = {
    False: {"conv1": "stem/0/conv", "bn1": "stem/0/bn"},
    True: {"conv1.0": "stem/0/conv", "conv1.1": "stem/0/bn", "conv1.3": "stem/1/conv", "conv1.4": "stem/1/bn",
           "conv1.6": "stem/2/conv", "bn1": "stem/2/bn"},
}
_TORCH_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.0|downsample\.1)$")
_TORCH_DOWNSAMPLE = {"downsample.0": "downsample/conv", "downsample.1": "downsample/bn"}
_TORCH_LEAF = {"conv": {"weight": "kernel"},
               "bn": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}}
TORCH_IGNORED = re.compile(r"(^fc\.|\.num_batches_tracked$)")  # the ImageNet classifier, BN step counters


def torch_deep_stem(keys) -> bool:
  """Whether a torch ResNet state dict has the 3-conv deep stem (timm `*c`/`*d`, UniMatch) rather than 7x7."""
  return "conv1.0.weight" in keys


def torch_variable(key: str, *, deep_stem: bool) -> tuple[str, str] | None:
  """torch key -> (path inside `ResNet`, 'conv' | 'bn'), or None when this ResNet has no such variable."""
  module, _, leaf = key.rpartition(".")
  target = _TORCH_STEM[deep_stem].get(module)
  if target is None and (m := _TORCH_BLOCK.match(module)):
    part = _TORCH_DOWNSAMPLE.get(m.group(3), m.group(3))
    target = f"layer{m.group(1)}/{m.group(2)}/{part}"
  if target is None:
    return None
  kind = "conv" if target.rsplit("/", 1)[-1].startswith("conv") else "bn"
  name = _TORCH_LEAF[kind].get(leaf)
  return (f"{target}/{name}", kind) if name else None


def torch_to_flax(value, kind: str):
  """A torch array in this ResNet's layout: conv OIHW -> HWIO; BatchNorm vectors unchanged."""
  return value.transpose(2, 3, 1, 0) if kind == "conv" else value
