"""The semi-supervised model: the segmenter plus S4MIM's class-wise reconstruction heads, and its initial state
(prototypes, EMA teacher, class prior and thresholds in `state["extra"]`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskseg_jax import pretrained
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods import segmentation
from maskseg_jax.methods.semi_supervised.mim_heads import ClassWiseReconstruction
from maskseg_jax.methods.semi_supervised.terms import Terms
from maskseg_jax.models import build_model


FEATURE_STRIDE = 4  # the decoder map (DeepLabV3+, U-Net); the reconstruction heads pixel-shuffle it back to full size


class SemiModel(nnx.Module):
  """The segmenter plus S4MIM's class-wise reconstruction heads, so one optimizer sees every trained weight.

  Calling it is calling the segmenter, so evaluators and prediction treat it as any segmentation model.
  """

  def __init__(self, segmenter: nnx.Module, rec_head: ClassWiseReconstruction | None = None):
    self.segmenter = segmenter
    self.rec_head = rec_head

  def __call__(self, x, *, train: bool):
    return self.segmenter(x, train=train)


def labeled_class_prior(source, num_classes: int, ignore_label: int, max_images: int = 256) -> np.ndarray:
  """float32[C] class frequencies of (up to `max_images`, evenly spaced) labeled images: the prior guard's start."""
  n = len(source)
  counts = np.zeros(num_classes, np.float64)
  for i in np.unique(np.linspace(0, n - 1, min(n, max_images)).astype(int)):
    y = np.asarray(source[int(i)]["label"]).ravel()
    y = y[(y != ignore_label) & (y < num_classes)]
    counts += np.bincount(y, minlength=num_classes)[:num_classes]
  if counts.sum() == 0:
    return np.full(num_classes, 1.0 / num_classes, np.float32)
  return (counts / counts.sum()).astype(np.float32)


def build_model_and_state(config, terms: Terms, class_prior: np.ndarray | None = None):
  """-> (ModelDef, optimizer, initial state) of a SemiModel; the heads exist only if L_rec is on.

  `class_prior` starts the prior guard's labeled class frequencies (uniform when None).
  """
  rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
  seg = build_model(config.model, terms.num_classes, rngs)
  missing = [a for a in ("encode", "decode", "classify", "feature_channels") if not hasattr(seg, a)]
  if missing:
    raise ConfigError(f"semi_supervised needs a model split into encode/decode/classify (DeepLabV3+, U-Net); "
                      f"model.name={config.model.name!r} lacks {missing}. Use model.name='deeplabv3plus' or 'unet'")
  if config.model.get("init_from", ""):  # e.g. a pretrained run: every weight but the classifier
    pretrained.load_into(seg, config.model.init_from)
  rec = None
  if terms.l_rec > 0:
    rec = ClassWiseReconstruction(seg.feature_channels, terms.num_classes, patch=FEATURE_STRIDE, rngs=rngs)
  mdef, tx, state = segmentation.init_model_state(config, terms.num_classes, model=SemiModel(seg, rec))
  if terms.l_agg > 0:
    state["extra"]["prototypes"] = jnp.zeros((terms.num_classes, seg.feature_channels), jnp.float32)
  uniform = lambda: np.full((terms.num_classes,), 1.0 / terms.num_classes, np.float32)  # noqa: E731
  if terms.ensemble_guard == "prior":
    state["extra"]["class_prior"] = uniform() if class_prior is None else np.asarray(class_prior, np.float32)
  if terms.threshold != "fixed":  # starts at the fixed tau for every class (beta = 1)
    state["extra"]["class_conf"] = uniform()
  if terms.ema_decay > 0:  # copies: the state is donated, so no two leaves may share a buffer
    state["extra"]["teacher"] = jax.tree.map(np.array, dict(params=state["params"],
                                                            batch_stats=state["batch_stats"]))
  return mdef, tx, state
