"""Methods by name. Each module exposes `build(config, mesh, workdir) -> methods.base.Task`.

  supervised         DeepLabV3+ / U-Net / FCN on labelled data
  lmae               L-MAE label completion (label masked autoencoder)
  semi_supervised    UniMatch weak/strong consistency with optional S4MIM and MaskMatch terms
  selective_masking  U-Net masked-tile reconstruction pretraining in partition stages, then fine-tuning
"""

from __future__ import annotations

import importlib
from types import ModuleType

from maskseg_jax.errors import ConfigError

METHODS = {
    "supervised": "maskseg_jax.methods.supervised.task",
    "lmae": "maskseg_jax.methods.lmae.task",
    "semi_supervised": "maskseg_jax.methods.semi_supervised.task",
    "selective_masking": "maskseg_jax.methods.selective_masking.task",
}


def get_method(name: str) -> ModuleType:
  if name not in METHODS:
    raise ConfigError(f"config.method={name!r} is unknown; expected one of {sorted(METHODS)}")
  return importlib.import_module(METHODS[name])
