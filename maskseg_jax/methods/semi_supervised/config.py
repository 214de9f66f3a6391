"""The `config.semi` section: one schema for every semi-supervised variant, presets by name.

FixMatch, UniMatch, UniMatch+S4MIM, UniMatch+MaskMatch, all of them, and the supervised-only baseline are the
same trainer with loss terms switched on or off by weight (0 = off, and the term's work is not traced), so an
ablation is a config and any field can still be overridden on the command line. Presets are applied when a
config file builds the section (its arg names the variant); `semi.variant` records which preset that was.

Fields under "Our extensions" are this project's, not the papers': a labeled-only warm-up and ramp of the
unlabeled terms (`warmup_steps`, `rampup_steps`), the MaskMatch collapse guards
(`ensemble_guard`), FlexMatch-style class-wise thresholds (`threshold`) and the pseudo-label diagnostics
(`diagnostics`). Their defaults leave the published methods unchanged.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from maskseg_jax.config_base import add_section
from maskseg_jax.data.strong_augment import StrongAugConfig
from maskseg_jax.errors import ConfigError

# UniMatch (CVPR 2023) as the base: L = scale * (w_x L_x + w_s1 L_s1 + w_s2 L_s2 + w_fp L_fp) + extra terms.
DEFAULTS = dict(
    variant="unimatch",          # the preset these values came from (set by the config's arg)
    unlabeled_split="train",     # split / slice `train[64:]` / split file of the unlabeled images
    labeled_fraction=0.0,        # > 0: partition data.train_split into labeled/unlabeled split files written to
                                 # split_dir (a fraction < 1 or a count >= 1); 0: use data.train_split and
                                 # unlabeled_split as given
    split_seed=0,                # seed of the generated partition (nested across fractions)
    split_dir="",                # where generated split files go ("": <workdir>/splits)
    tau=0.95,                    # confidence threshold of pseudo-labels (VOC 0.95, Cityscapes 0)
    scale=0.5,                   # UniMatch's "/ 2" over the four consistency terms below
    w_x=1.0,                     # labeled CE (or OHEM CE)
    w_s1=0.25,                   # strong view 1 (CutMix-ed) vs weak pseudo-labels
    w_s2=0.25,                   # strong view 2 (CutMix-ed)
    w_fp=0.5,                    # feature-perturbed weak view
    fp_dropout=0.5,              # Dropout2d rate of the feature perturbation (low and high features)
    fp_labeled=True,             # the perturbed decoder pass also sees the labeled rows' dropped features (they
                                 # reach no loss, only its BN statistics), as UniMatch's code; False: weak only
    mix_teacher="weak",          # CutMix-box labels: weak (the partner's weak-branch pseudo-label, one pass less)
                                 # | eval (a no-gradient eval-mode pass over the partners, UniMatch's code)
    ohem=False,                  # OHEM for L_x (Cityscapes)
    ohem_thresh=0.7,
    ohem_min_kept=200000,
    # S4MIM (added to the total outside `scale`)
    l_rec=0.0,                   # class-wise masked reconstruction (MSE on norm-pix targets)
    l_agg=0.0,                   # class-wise mask-induced feature aggregation (cosine to EMA prototypes)
    l_sem=0.0,                   # MIM in semantic space (masked view vs unmasked pseudo-labels)
    mim_ratio=0.5,               # patch mask ratio of the S4MIM masked view (our choice)
    mim_patch=32,                # mask patch size in pixels (32 at crop 321; our choice); also the norm-pix block
    proto_momentum=0.99,         # prototype memory EMA (our choice)
    # MaskMatch (added outside `scale`)
    l_mask=0.0,                  # masked student view vs the teacher's pseudo-label of the complete image
    mask_ratio=0.7,              # 30% of patches visible
    mask_patch=32,
    ensemble_scales=(),          # teacher softmax averaged over these scales (eval-mode BN); (): pseudo-labels
                                 # from the weak branch of the training forward, as UniMatch
    ema_decay=0.0,               # > 0: an EMA teacher (params and BN statistics) in state["extra"]["teacher"]
    teacher_batch_stats=True,    # teacher passes normalize with batch statistics (update discarded), as the
                                 # weak branch does; False: eval mode on running statistics
    # Our extensions (not in the papers; the defaults keep the papers' behaviour)
    warmup_steps=0,              # labeled-only steps (the supervised step, at its cost) before the unlabeled terms
    rampup_steps=0,              # then a linear ramp of the unlabeled terms' weight from 0 to 1 over this many,
                                 # the labeled weight going from w_x to scale * w_x
    ensemble_guard="none",       # MaskMatch collapse guard: none (plain mean of the scales) | confident (mean of
                                 # only the scales whose max prob passes the threshold at that pixel) | prior
                                 # (distribution alignment of the ensemble to the labeled class frequencies)
    prior_momentum=0.99,         # EMA of the labeled crops' class frequencies, started from the labeled images'
    threshold="fixed",           # fixed (tau for every class, the papers) | flexmatch (class-wise tau_c =
                                 # tau * b/(2-b), b = the class's confident share / the largest, FlexMatch-style)
    tau_min=0.5,                 # floor of the class-wise thresholds
    threshold_momentum=0.99,     # EMA of the per-class confident shares (threshold="flexmatch")
    diagnostics=True,            # where the unlabeled images have labels (synthetic, CamVid, VOC, Cityscapes):
                                 # the unlabeled stream carries them as u_truth (read by no loss), the step
                                 # reports pl_acc / pl_acc_conf / pl_tv next to conf_frac (the pass rate), and
                                 # every eval adds semi_diag/* (pass rate, accuracy, per-class pseudo-label vs
                                 # truth shares) on diag_images unlabeled images; False: none of it
    diag_images=32,
)

_S4MIM = dict(l_rec=1.0, l_agg=1.0, l_sem=0.5)
_MASKMATCH = dict(l_mask=1.0, ensemble_scales=(0.75, 1.0, 1.25))
VARIANTS = {
    "supervised": dict(w_s1=0.0, w_s2=0.0, w_fp=0.0, scale=1.0),
    "fixmatch": dict(w_s1=1.0, w_s2=0.0, w_fp=0.0),
    "unimatch": {},
    "s4mim": _S4MIM,
    "maskmatch": _MASKMATCH,
    "all": {**_S4MIM, **_MASKMATCH},
}


def add_semi_section(config: ml_collections.ConfigDict, variant: str = "unimatch",
                     **overrides) -> ml_collections.ConfigDict:
  """Adds `config.semi` with the preset `variant` (a key of VARIANTS) and then `overrides` applied."""
  if variant not in VARIANTS:
    raise ConfigError(f"semi variant {variant!r} is unknown; expected one of {sorted(VARIANTS)}")
  values = dict(DEFAULTS)
  values.update({f.name: f.default for f in dataclasses.fields(StrongAugConfig)})  # strong-view knobs
  values.update(VARIANTS[variant])
  values["variant"] = variant
  unknown = sorted(set(overrides) - set(values))
  if unknown:
    raise ConfigError(f"unknown config.semi fields {unknown}; known: {sorted(values)}")
  values.update(overrides)
  return add_section(config, "semi", **values)
