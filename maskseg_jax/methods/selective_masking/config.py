"""Settings shared by the selective-masking configs (pretraining and fine-tuning), so dataset configs stay short.

Defaults are the authors' setup (specs/selective_masking.md): U-Net ResNet-34 with dropout 0.2, Adam 3e-3 without
weight decay, linear warmup from 0.01x then cosine to 0.01x, 50% of 21 x 21 tiles masked with the mean colour,
5 scoring draws, 10 partitions. Dataset configs override the budget and the crop-dependent fields.
"""

from __future__ import annotations

import ml_collections

from maskseg_jax.config_base import add_section, set_model
from maskseg_jax.errors import ConfigError

STRATEGIES = ("selective", "random", "random_stages")

SELECTIVE_DEFAULTS = dict(
    stage=-1,                  # set by the stage driver on each stage's config; leave at -1
    strategy="selective",      # selective | random (same budget, one stage on the whole set) | random_stages
    num_partitions=10,         # P_k = D[k::num_partitions]
    val_every=10,              # every val_every-th image of a partition is its validation set (10%)
    split="",                  # pretraining images ("": data.train_split); labels are never read
    steps_per_stage=1000,      # the train steps of every stage (train.steps is set from it)
    grid=21,                   # g x g tiles over data.crop_size (the authors: ~sqrt(512) per side)
    mask_ratio=0.5,
    num_draws=5,               # random masks reconstructed per image when scoring
    score_batch_size=16,       # global batch of the scoring pass (a multiple of the device count)
    sequential_draws=False,    # score one draw at a time (1/num_draws of the memory)
    ms_ssim_weights=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333),  # one weight per MS-SSIM scale
    ms_ssim_window=11,         # small crops: fewer scales and a smaller window (e.g. 3 scales, 7 px at 64 px)
    loss_ssim="ms_ssim",       # training loss L1 + (1 - MS-SSIM) | "ssim3": 3 px Gaussian SSIM (the authors' loop)
    metric_space="unit",       # L1/SSIM/MS-SSIM on [0, 1] intensities | "normalized" (the authors' code)
    score_window="uniform",    # 3x3 SSIM window of the tile scores | "gaussian" (sigma 1.5, the authors')
    score_scope="image",       # tile SSIM from one full-image map | "tile": inside each tile crop (the authors')
    crop_scale=(0.25, 1.0),    # random resized crop area range ((1, 1): no crop)
    crop_ratio=(3 / 4, 4 / 3),
    jitter=(0.4, 0.4, 0.4, 0.1),  # colour jitter of the input (brightness, contrast, saturation, hue)
    jitter_p=0.8,
)


def pretrain_defaults(c: ml_collections.ConfigDict, **selective) -> ml_collections.ConfigDict:
  """Turns a base config into a selective-masking pretraining config; `selective` overrides the section."""
  unknown = sorted(set(selective) - set(SELECTIVE_DEFAULTS))
  if unknown:
    raise ConfigError(f"unknown selective fields {unknown}; known: {sorted(SELECTIVE_DEFAULTS)}")
  strategy = selective.get("strategy", SELECTIVE_DEFAULTS["strategy"])
  if strategy not in STRATEGIES:
    raise ConfigError(f"selective strategy {strategy!r}; expected one of {list(STRATEGIES)}")
  c.method = "selective_masking"
  set_model(c, "unet")
  _adam(c)
  c.train.steps = 0            # per stage: selective.steps_per_stage
  c.train.best_metric = ""     # keep the latest checkpoints (the next stage starts from the last one)
  add_section(c, "selective", **{**SELECTIVE_DEFAULTS, **selective})
  return c.selective


def finetune_defaults(c: ml_collections.ConfigDict, init_from: str = "") -> None:
  """Supervised U-Net fine-tuning from a pretraining run folder (`init_from`; "" trains from scratch)."""
  c.method = "supervised"
  set_model(c, "unet")
  _adam(c)
  c.model.init_from = init_from


def _adam(c: ml_collections.ConfigDict) -> None:
  c.optim.name = "adam"
  c.optim.lr = 3e-3
  c.optim.weight_decay = 0.0
  c.optim.head_lr_mult = 1.0
  c.optim.schedule = "cosine"
