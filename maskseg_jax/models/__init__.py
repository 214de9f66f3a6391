"""Model registry: `build_model(config.model, num_classes, rngs)` picks a builder by `model.name`.

Builders map the shared `config.model` fields (name, backbone, width, deep_stem, output_stride, dropout, and an
optional dtype; DeepLabV3+ also reads `align_corners`) onto one model's constructor, so methods never branch on
the model name.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx

from maskseg_jax.errors import ConfigError
from maskseg_jax.models.deeplabv3plus import DeepLabV3Plus
from maskseg_jax.models.fcn import FCN
from maskseg_jax.models.resnet import ResNet
from maskseg_jax.models.unet import UNet, replace_head

_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


def _depth(model_config) -> int:
  name = model_config.backbone
  if name not in _DEPTHS:
    raise ConfigError(f"model.backbone={name!r} is unknown; expected one of {sorted(_DEPTHS)}.")
  return _DEPTHS[name]


def _dtype(model_config) -> Any:
  """Compute dtype from an optional `model.dtype` ('float32', 'bfloat16'); parameters stay float32."""
  name = model_config.get("dtype", None)
  if name in (None, "", "float32"):
    return None
  try:
    return jnp.dtype(name)
  except TypeError as e:
    raise ConfigError(f"model.dtype={name!r} is not a dtype; expected e.g. 'float32' or 'bfloat16'.") from e


def _build_deeplabv3plus(model_config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
  return DeepLabV3Plus(num_classes, depth=_depth(model_config), width=model_config.width,
                       deep_stem=model_config.deep_stem, output_stride=model_config.output_stride,
                       dropout=model_config.dropout, align_corners=model_config.get("align_corners", False),
                       dtype=_dtype(model_config), rngs=rngs)


def _build_unet(model_config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
  # The selective-masking U-Net is defined on ResNet-34; ResNet-18 is allowed as a smaller variant and
  # every other backbone name falls back to 34. The encoder always runs at output stride 32.
  depth = 18 if model_config.backbone == "resnet18" else 34
  return UNet(num_classes, depth=depth, width=model_config.width, deep_stem=model_config.deep_stem,
              dropout=model_config.dropout, dtype=_dtype(model_config), rngs=rngs)


def _build_fcn(model_config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
  return FCN(num_classes, depth=_depth(model_config), width=model_config.width, deep_stem=model_config.deep_stem,
             output_stride=model_config.output_stride, dropout=model_config.dropout, dtype=_dtype(model_config),
             rngs=rngs)


# Another helper adds "lmae" (methods/lmae/model.py) here; the lead wires that line in.
MODELS: dict[str, Callable[..., nnx.Module]] = {
    "deeplabv3plus": _build_deeplabv3plus,
    "unet": _build_unet,
    "fcn": _build_fcn,
}


def build_model(model_config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds `MODELS[model_config.name]`; an unknown name is a ConfigError listing the known ones."""
  name = model_config.name
  if name not in MODELS:
    raise ConfigError(f"model.name={name!r} is unknown; expected one of {sorted(MODELS)}.")
  return MODELS[name](model_config, num_classes, rngs)


__all__ = ["MODELS", "build_model", "DeepLabV3Plus", "FCN", "ResNet", "UNet", "replace_head"]
