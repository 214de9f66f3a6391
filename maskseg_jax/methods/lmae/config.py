"""The `lmae` config section and the L-MAE defaults every `configs/lmae_*.py` shares.

Plain Python with no JAX import, so configs stay cheap to load. `apply_lmae(config, ...)` sets the method,
the L-MAE model fields (see `maskseg_jax/methods/lmae/model.py`), the paper's optimizer (Adam, coupled L2 1e-4,
reduce-on-plateau 0.8 / patience 6 (= PyTorch's 5) / threshold 1e-3) and adds the `lmae` section; the config
file then overrides what differs and locks.
"""

from __future__ import annotations

from maskseg_jax.config_base import add_section

LMAE_DEFAULTS = dict(
    mask_ratio=0.5,                 # fraction of patches masked in training (static K = int(L * (1 - m)))
    strategy_probs=(1, 2, 2),       # Random : Background-First : Label-First, drawn per sample
    background_classes=(0,),        # class ids counted as background by BF/LF and routing (() if none)
    class_weighting="paper",        # paper (eq. 10-12 weights from training frequencies) | none
    beta=1.0, gamma=1.0, xi=1e-6,   # eq. 10 (fixed, not learned: see the spec)
    loss_region="masked",           # masked (MAE-style) | all
    train_mask_ratios=(),           # this project's extension: train at these ratios, an equal slice of each batch (eval: mask_ratio)
    lovasz_weight=0.0,              # this project's extension: + weight x Lovasz-softmax (an mIoU surrogate)
    color_jitter=0.0,               # this project's extension: training colour jitter strength (0: off, the paper)
    eval_strategies=("background_first", "random"),  # first -> val/*, others -> val_<name>/*
    mirror_average=False,           # this project's extension: average with the mirrored input at eval/completion
    fill_blend=0.0,                 # this project's extension: mix a x one-hot(geodesic fill) into the softmax (eval/completion)
    fill_blend_reach=0.0,           # this project's extension: a x exp(-d / reach) at d px from the fill's seed (0: a)
    progressive_reveal=(),          # this project's extension: cumulative fractions of masked patches revealed (eval/completion)
    pixel_context=True,             # this project's extension: completion seeds the prior and fill blend with given pixels in masked patches
    eval_seed=0,                    # fixed masking noise, so evals are comparable between steps
    eval_baselines=("nearest", "geodesic"),  # non-learned fills scored beside the model (maskseg_jax/methods/lmae/fills.py)
    unknown_value=254,              # label value a user sets on pixels to complete (always masked)
    complete_images="",             # mode=complete: folder of images
    complete_labels="",             # mode=complete: folder of <stem>.png labels (palette or grayscale)
    complete_out="",                # mode=complete: new folder for the completed labels
    complete_models=(),             # mode=complete: more trained runs, "WORKDIR" or "RATIO=WORKDIR"
    complete_checkpoint="latest",   # latest | best, for complete_models
    complete_missing="unknown_and_void",  # which pixels are filled (complete.py --missing)
    complete_scale="train",         # train (tiles at the training field of view) | fit (complete.py --scale)
    complete_palette="",            # colour -> class id file for RGB labels (complete.py --palette)
)


def apply_lmae(c, *, size: str, patch_size: int, image_size, mask_ratio: float, **lmae_overrides):
  """Sets the shared L-MAE fields of a `base_config()` and adds its `lmae` section (before `lock()`)."""
  c.method = "lmae"
  m = c.model
  m.name = "lmae"
  m.size = size
  m.patch_size = int(patch_size)
  m.image_size = tuple(image_size) if not isinstance(image_size, int) else (image_size, image_size)
  m.fuse = "layer"
  m.ips = True
  m.activation = "relu"
  m.drop_path = 0.0
  for k in ("enc_depth", "dec_depth", "enc_dim", "dec_dim", "enc_heads", "dec_heads"):
    m[k] = 0  # 0: taken from `size`
  m.mlp_ratio = 4.0
  m.prior = "none"                  # this project's extensions (methods/lmae/extensions.py): off = the paper
  m.refine_width = 0
  m.prior_skip = False
  c.data.eval_size = m.image_size   # evaluation runs on val images resized to the model input
  c.data.scale_range = (1.0, 1.0)   # the paper: crop, resize; else a random rescale first (this project's extension)
  o = c.optim
  o.name = "adam"
  o.weight_decay = 1e-4
  o.head_lr_mult = 1.0              # the encoder is `backbone`; L-MAE trains everything at one rate
  o.schedule = "plateau"
  o.plateau_factor = 0.8
  o.plateau_patience = 6
  o.plateau_threshold = 1e-3
  c.train.best_metric = "val/pa_miou"
  add_section(c, "lmae", **dict(LMAE_DEFAULTS, mask_ratio=float(mask_ratio), **lmae_overrides))
  return c
