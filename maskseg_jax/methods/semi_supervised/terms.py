"""What the semi-supervised step computes, read once from `config.semi` (`Terms`), and how a pixel's pseudo-label
is accepted: the fixed `tau` or class-wise thresholds (`THRESHOLDS`), and how MaskMatch's per-scale teacher
maps are combined (`ENSEMBLE_GUARDS`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.semi_supervised import ensemble


@dataclasses.dataclass(frozen=True)
class Terms:
  """The static switches and constants of the step, read once from `config.semi`."""
  num_classes: int
  ignore_label: int
  tau: float
  scale: float
  w_x: float
  w_s1: float
  w_s2: float
  w_fp: float
  fp_dropout: float
  fp_labeled: bool
  mix_teacher: str
  ohem: bool
  ohem_thresh: float
  ohem_min_kept: int
  l_rec: float
  l_agg: float
  l_sem: float
  mim_ratio: float
  mim_patch: int
  proto_momentum: float
  l_mask: float
  mask_ratio: float
  mask_patch: int
  ensemble_scales: tuple[float, ...]
  ema_decay: float
  teacher_batch_stats: bool
  ensemble_guard: str
  prior_momentum: float
  threshold: str
  tau_min: float
  threshold_momentum: float
  diagnostics: bool
  warmup_steps: int
  rampup_steps: int

  @classmethod
  def from_config(cls, config) -> Terms:
    sc = config.semi
    names = {f.name for f in dataclasses.fields(cls)} - {"num_classes", "ignore_label"}
    values = {n: sc[n] for n in names}
    values["ensemble_scales"] = tuple(float(s) for s in sc.ensemble_scales)
    terms = cls(num_classes=int(config.data.num_classes), ignore_label=int(config.data.ignore_label), **values)
    terms.validate()
    return terms

  def validate(self) -> None:
    weights = ("w_x", "w_s1", "w_s2", "w_fp", "l_rec", "l_agg", "l_sem", "l_mask")
    negative = [w for w in weights if getattr(self, w) < 0]
    if negative:
      raise ConfigError(f"config.semi weights {negative} are negative; expected >= 0 (0 switches a term off)")
    for name in ("mim_ratio", "mask_ratio"):
      if not 0.0 < getattr(self, name) < 1.0:
        raise ConfigError(f"config.semi.{name}={getattr(self, name)}; expected a ratio in (0, 1)")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ConfigError(f"config.semi.ema_decay={self.ema_decay}; expected 0 (off) or a decay in (0, 1)")
    if not 0.0 <= self.fp_dropout < 1.0:
      raise ConfigError(f"config.semi.fp_dropout={self.fp_dropout}; expected a rate in [0, 1)")
    if self.mix_teacher not in MIX_TEACHERS:
      raise ConfigError(f"config.semi.mix_teacher={self.mix_teacher!r}; expected one of {list(MIX_TEACHERS)}")
    if self.mix_teacher != "weak" and self.teacher_pass:
      raise ConfigError(f"config.semi.mix_teacher={self.mix_teacher!r} labels CutMix boxes by an eval pass, but a "
                        "teacher pass (ensemble_scales or ema_decay) already labels every unlabeled pixel; set "
                        "config.semi.mix_teacher='weak'")
    if self.ensemble_guard not in ENSEMBLE_GUARDS:
      raise ConfigError(f"config.semi.ensemble_guard={self.ensemble_guard!r}; expected one of {sorted(ENSEMBLE_GUARDS)}")
    if self.ensemble_guard != "none" and not self.ensemble_scales:
      raise ConfigError(f"config.semi.ensemble_guard={self.ensemble_guard!r} guards the multi-scale teacher, but "
                        "config.semi.ensemble_scales is empty; set scales (MaskMatch) or ensemble_guard='none'")
    if self.warmup_steps < 0 or self.rampup_steps < 0:
      raise ConfigError(f"config.semi.warmup_steps={self.warmup_steps}, rampup_steps={self.rampup_steps}; "
                        "expected counts >= 0")
    if self.threshold not in THRESHOLDS:
      raise ConfigError(f"config.semi.threshold={self.threshold!r}; expected one of {sorted(THRESHOLDS)}")
    if self.threshold != "fixed" and not 0.0 <= self.tau_min <= self.tau:
      raise ConfigError(f"config.semi.tau_min={self.tau_min}; expected 0 <= tau_min <= tau={self.tau}")

  @property
  def s4mim(self) -> bool:
    return self.l_rec > 0 or self.l_agg > 0 or self.l_sem > 0

  @property
  def unlabeled(self) -> bool:
    return self.w_s1 > 0 or self.w_s2 > 0 or self.w_fp > 0 or self.s4mim or self.l_mask > 0

  @property
  def teacher_pass(self) -> bool:
    return bool(self.ensemble_scales) or self.ema_decay > 0


# Who labels the pixels pasted inside a CutMix box (the partner image's): "weak" the partner's own weak-branch
# pseudo-label of the training forward (train-mode BN, no extra pass: this project's default), "eval" a separate
# no-gradient eval-mode pass over the partner images before the step, as UniMatch's code does for its second
# unlabeled batch.
MIX_TEACHERS = {"weak": "weak-branch pseudo-labels of the partner", "eval": "eval-mode pass (UniMatch's code)"}


# How the per-scale teacher softmax maps become one (MaskMatch's ensemble). "none" is the paper's plain mean;
# "confident" and "prior" are this project's collapse guards (see methods/semi_supervised/ensemble.py).
ENSEMBLE_GUARDS = {
    "none": lambda probs, thr, prior, valid: ensemble.mean_probs(probs),
    "confident": lambda probs, thr, prior, valid: ensemble.confident_mean(probs, thr),
    "prior": lambda probs, thr, prior, valid: ensemble.align_to_prior(ensemble.mean_probs(probs), prior, valid),
}


def _flexmatch_thresholds(terms: Terms, extra: dict):
  """FlexMatch-style class-wise thresholds on pixels (our extension): tau_c = tau * M(beta_c), M(b) = b / (2 - b),
  beta_c = sigma_c / max sigma, sigma_c an EMA of the share of pixels confidently (>= tau) labeled c; floored at
  tau_min. A class the model is rarely sure of gets a lower bar instead of no pseudo-labels at all."""
  sigma = extra["class_conf"]
  beta = sigma / jnp.maximum(jnp.max(sigma), 1e-12)
  return jnp.maximum(terms.tau_min, terms.tau * beta / (2.0 - beta))


THRESHOLDS = {"fixed": lambda terms, extra: None, "flexmatch": _flexmatch_thresholds}


def class_thresholds(terms: Terms, extra: dict):
  """float[C] per-class thresholds, or None for the paper's one fixed `tau`."""
  return THRESHOLDS[terms.threshold](terms, extra)


def pixel_threshold(terms: Terms, tau_c) -> Callable:
  """labels -> the threshold each pixel's confidence is compared with (a scalar when fixed)."""
  if tau_c is None:
    return lambda y: terms.tau
  return lambda y: tau_c[y]
