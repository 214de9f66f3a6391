"""L-MAE label completion: train a label masked autoencoder on (image, label) pairs with mixed mask strategies.

Training batches are random crops (`data.crop_size`) resized to the model input (`model.image_size`); each
sample's patches are masked by Random / Background-First / Label-First (1:2:2) with one static K, and the loss
is eq. 10-12 class-weighted cross entropy on the masked pixels. Class frequencies are counted once over all
training labels and kept in `<workdir>/class_frequencies.json`; the weights live in the train state, so they
are checkpointed. Evaluation reports PA-mIoU and global mIoU per mask strategy (`methods/lmae/evaluator.py`);
`config.mode=complete` completes a folder of labels (`methods/lmae/label_folder.py`, the logic of `maskseg-complete`). Spec: ../shared/specs/lmae.md.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from maskseg_jax import optim
from maskseg_jax.data import pipeline
from maskseg_jax.data import transforms as T
from maskseg_jax.data.strong_augment import color_jitter
from maskseg_jax.data.views import ResizedSource
from maskseg_jax.errors import ConfigError
from maskseg_jax.losses import segmentation as seg_losses
from maskseg_jax.methods import base, segmentation
from maskseg_jax.methods.lmae import inference as inf
from maskseg_jax.methods.lmae import label_folder
from maskseg_jax.methods.lmae import patch_masks as P
from maskseg_jax.methods.lmae.evaluator import LMAEEvaluator
from maskseg_jax.methods.lmae.model import build_lmae

FREQ_FILE = "class_frequencies.json"
CONFIG_FILE = "config.json"
LOSS_REGIONS = ("masked", "all")
WEIGHTINGS = ("paper", "none")


class LMAETrainTransform:
  """[rescale] -> random crop `crop_size` (pad: image 0, label ignore) -> resize to the model input -> hflip ->
  [colour jitter] -> normalize.

  A class (not a closure) so it pickles into grain workers. The crop is taken before the resize, as the paper
  does on VOC (448 crops shown to a 224 model). This project's extensions, off by default (= the paper): a
  random rescale by U`data.scale_range` before the crop, and a colour jitter of strength `color_jitter`
  (brightness, contrast and saturation by U[1 - s, 1 + s], hue by s / 5 of a turn), which change the image a
  label is completed from, never the labels' classes.
  """

  def __init__(self, data_config, image_size, color_jitter: float = 0.0):
    self.scale_range = tuple(float(s) for s in data_config.get("scale_range", (1.0, 1.0)))
    self.color_jitter = float(color_jitter)
    self.crop_size = tuple(int(s) for s in data_config.crop_size)
    self.image_size = tuple(int(s) for s in image_size)
    self.hflip = bool(data_config.hflip)
    self.mean = tuple(float(m) for m in data_config.mean)
    self.std = tuple(float(s) for s in data_config.std)
    self.ignore_label = int(data_config.ignore_label)

  def __call__(self, example, rng: np.random.Generator):
    image, label = T.random_scale(example["image"], example["label"], rng, self.scale_range)  # (1, 1): no draw
    image, label = T.random_crop_pad(image, label, rng, self.crop_size, ignore_label=self.ignore_label)
    image, label = T.resize(image, label, self.image_size)
    if self.hflip:
      image, label = T.random_hflip(image, label, rng)
    if self.color_jitter > 0:
      s = self.color_jitter
      image = color_jitter(image, rng, brightness=s, contrast=s, saturation=s, hue=s / 5)
    return {"image": T.normalize(image, self.mean, self.std), "label": label.astype(np.int32)}


# --- class frequencies ------------------------------------------------------------------------------------
def count_pixels(source, num_classes: int) -> np.ndarray:
  """int64[N] pixel count of every class over every label of `source` (void and other ids skipped)."""
  counts = np.zeros(256, np.int64)
  for i in range(len(source)):
    counts += np.bincount(np.asarray(source[i]["label"], np.uint8).reshape(-1), minlength=256)
  return counts[:num_classes]


def load_or_count_frequencies(source, workdir: str, num_classes: int, class_names=None) -> np.ndarray:
  """Class frequencies from `<workdir>/class_frequencies.json`, counted and written there on first use.

  Reusing the file keeps a resumed run's weights identical even if the data folder changed meanwhile.
  """
  path = os.path.join(workdir, FREQ_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    freqs = np.asarray(saved.get("frequencies", []), np.float64)
    if freqs.shape != (num_classes,):
      raise ConfigError(f"{path} holds {freqs.shape[0]} class frequencies but data.num_classes={num_classes}; "
                        "delete the file (it is recounted) or use a new --workdir")
    return freqs
  counts = count_pixels(source, num_classes)
  freqs = seg_losses.class_frequencies(counts)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    record = {"num_classes": num_classes, "class_names": list(class_names or []), "images": len(source),
              "pixel_counts": counts.tolist(), "frequencies": freqs.tolist()}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(record, f, indent=1)
    os.replace(tmp, path)  # readers never see a half-written file
  return freqs


def class_weights(freqs: np.ndarray, lc) -> np.ndarray:
  if lc.class_weighting not in WEIGHTINGS:
    raise ConfigError(f"lmae.class_weighting={lc.class_weighting!r}; expected one of {WEIGHTINGS}")
  if lc.class_weighting == "none":
    return np.ones(len(freqs), np.float32)
  return seg_losses.lmae_class_weights(freqs, beta=lc.beta, gamma=lc.gamma, xi=lc.xi)


def warn_unweighted(weights: np.ndarray, class_names=None) -> None:
  """Eq. 10 saturates for very frequent classes (weight ~0 = never learned); say so before training."""
  dead = np.flatnonzero(weights < 1e-3)
  if dead.size and jax.process_index() == 0:
    names = [class_names[i] if class_names else str(i) for i in dead]
    print(f"warning: L-MAE class weights give {names} a weight below 1e-3 ({weights[dead].tolist()}), so the loss "
          "hardly trains them; lower lmae.gamma, raise lmae.xi or set lmae.class_weighting=none", flush=True)


# --- train step -------------------------------------------------------------------------------------------
def train_ratios(lc) -> tuple[float, ...]:
  """The mask ratios of training: `lmae.train_mask_ratios` (this project's extension) or `lmae.mask_ratio`."""
  ratios = tuple(float(r) for r in lc.get("train_mask_ratios", ())) or (float(lc.mask_ratio),)
  for r in ratios:
    if not 0.0 <= r < 1.0:
      raise ConfigError(f"lmae.train_mask_ratios holds {r:g}; expected ratios in [0, 1)")
  return ratios


def make_train_step(mdef: base.ModelDef, tx, lr_fn, *, lc, model_config, ignore_label: int = 255):
  """Pure step: mixed-strategy static-K masks, forward on the visible patches, weighted CE on the region
  (+ `lmae.lovasz_weight` x the Lovasz-softmax loss on the same pixels, this project's extension).

  With several `lmae.train_mask_ratios` (this project's extension) the batch is cut into that many equal
  slices in order, slice i masked at ratio i (its own static K and mask key `fold_in(key, i)`); the CE is pooled
  over all slices' counted pixels and the Lovasz term averaged over the slices.
  """
  p, h, w, num_patches = inf.geometry(model_config)
  ratios = train_ratios(lc)
  ks = [P.num_visible(num_patches, r) for r in ratios]
  probs = tuple(float(x) for x in lc.strategy_probs)
  bg = tuple(int(c) for c in lc.background_classes)
  if lc.loss_region not in LOSS_REGIONS:
    raise ConfigError(f"lmae.loss_region={lc.loss_region!r}; expected one of {LOSS_REGIONS}")
  masked_only = lc.loss_region == "masked"
  lovasz = float(lc.get("lovasz_weight", 0.0))

  def lovasz_on_region(logits, label, ids_masked):
    """Lovasz-softmax on the masked patches' pixels only (gathered: the sort then holds K/L of the pixels;
    the value equals the loss with `region`, whose uncounted pixels sort last and weigh nothing)."""
    if ids_masked is None:
      return seg_losses.lovasz_softmax(logits, label, ignore_label=ignore_label)
    return seg_losses.lovasz_softmax(P.patch_pixel_values(logits, ids_masked, p),
                                     P.patch_pixel_values(label[..., None], ids_masked, p)[:, 0],
                                     ignore_label=ignore_label)

  def slices(batch_size: int):
    """(start, stop, K, key index) per training ratio; one ratio: the whole batch with the step's own key."""
    if len(ratios) == 1:
      return [(0, batch_size, ks[0], None)]
    if batch_size < len(ratios):
      raise ConfigError(f"lmae.train_mask_ratios has {len(ratios)} ratios but the batch holds {batch_size} samples")
    edges = np.linspace(0, batch_size, len(ratios) + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1]), ks[i], i) for i in range(len(ratios))]

  def train_step(state, batch, rng):
    k_mask, k_drop = jax.random.split(rng)
    parts = []
    for start, stop, k, i in slices(batch["label"].shape[0]):
      key = k_mask if i is None else jax.random.fold_in(k_mask, i)
      label = batch["label"][start:stop]
      b = P.background_proportion(label, p, bg, ignore_label)
      ids_keep, ids_masked, mask = P.mask_from_scores(P.mixed_strategy_scores(key, b, probs), k)
      region = inf.patch_pixels(mask, p, h, w) if masked_only else None
      parts.append((batch["image"][start:stop], label, ids_keep, ids_masked, region,
                    inf.strategy_choice(key, stop - start, probs)))

    def objective(params):
      model = mdef.merge(params, state["batch_stats"])
      base.reseed_dropout(model, k_drop)
      total = count = lovasz_sum = 0.0
      for image, label, ids_keep, ids_masked, region, _ in parts:
        logits = model(image, label, ids_keep, ids_masked, train=True)
        t, c = seg_losses.weighted_cross_entropy(logits, label, state["extra"]["class_weights"],
                                                 ignore_label=ignore_label, region=region)
        total, count = total + t, count + c
        if lovasz > 0:  # this project's extension: an mIoU surrogate on the same pixels
          lovasz_sum = lovasz_sum + lovasz_on_region(logits, label, ids_masked if masked_only else None)
      # A batch whose counted pixels all have weight 0 contributes nothing (instead of 0/0).
      loss = jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)
      if lovasz > 0:
        loss = loss + lovasz * lovasz_sum / len(parts)
      return loss, base.batch_stats_of(model)

    (loss, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
    new_state = base.apply_gradients(state, tx, grads, loss, batch_stats)
    which = jnp.concatenate([part[-1] for part in parts])
    metrics = {"loss": loss, "lr": lr_fn(state["step"]) * base.current_lr_scale(new_state["opt"])}
    for i, name in enumerate(P.STRATEGY_ORDER):
      metrics[f"frac_{name}"] = jnp.mean((which == i).astype(jnp.float32))
    return new_state, metrics

  return train_step


# --- building ---------------------------------------------------------------------------------------------
def init_state(config, num_classes: int, weights=None):
  """(ModelDef, optimizer, train state) of an L-MAE built from `config.model`; `extra` holds class weights."""
  rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
  model = build_lmae(config.model, num_classes, rngs)
  mdef, tx, state = segmentation.init_model_state(config, num_classes, model)
  weights = np.ones(num_classes, np.float32) if weights is None else np.asarray(weights, np.float32)
  state["extra"] = {"class_weights": jnp.asarray(weights)}
  return mdef, tx, state


def save_config_once(config, workdir: str) -> None:
  """`config.json` lets `maskseg-complete` rebuild the model from a workdir; main.py writes it too."""
  from maskseg_jax.config_checks import write_config  # atomic: never an empty or truncated config.json
  path = os.path.join(workdir, CONFIG_FILE)
  if jax.process_index() == 0 and not os.path.isfile(path):
    os.makedirs(workdir, exist_ok=True)
    write_config(config, workdir)


def eval_data_config(data_config, image_size):
  """The data config with eval_size = the model input (val images are resized to it, never padded)."""
  dc = ml_collections.ConfigDict(data_config.to_dict())
  dc.eval_size = tuple(int(s) for s in image_size)
  dc.eval_resize = False
  return dc


def build(config, mesh, workdir: str) -> base.Task:
  dc, lc, mc = config.data, config.lmae, config.model
  num_classes = int(dc.num_classes)
  p, h, w, _ = inf.geometry(mc)
  train_src, val_src = segmentation.load_sources(config)
  save_config_once(config, workdir)
  freqs = load_or_count_frequencies(train_src, workdir, num_classes, getattr(train_src, "class_names", None))
  weights = class_weights(freqs, lc)
  warn_unweighted(weights, getattr(train_src, "class_names", None))
  mdef, tx, state = init_state(config, num_classes, weights)

  train_iter = pipeline.train_iterator(train_src, dc, config.seed, process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       transform=LMAETrainTransform(dc, (h, w), lc.get("color_jitter", 0.0)))
  step = make_train_step(mdef, tx, optim.learning_rate(config.optim, config.train.steps), lc=lc,
                         model_config=mc, ignore_label=int(dc.ignore_label))

  strategies = tuple(lc.eval_strategies)
  unknown = [s for s in strategies if s not in P.MASK_STRATEGIES]
  if not strategies or unknown:
    raise ConfigError(f"lmae.eval_strategies={strategies}; expected names from {sorted(P.MASK_STRATEGIES)}")
  val_view = ResizedSource(val_src, (h, w))
  eval_dc = eval_data_config(dc, (h, w))
  evaluators = [LMAEEvaluator(name="val" if i == 0 else f"val_{s}", strategy=s, source=val_view,
                              data_config=eval_dc, mdef=mdef, mesh=mesh, model_config=mc, lmae_config=lc,
                              num_classes=num_classes, class_names=getattr(val_src, "class_names", None),
                              num_images=config.train.num_images)
                for i, s in enumerate(strategies)]

  def complete_mode(state):
    return label_folder.complete_from_config(config, mdef, state)

  return base.Task(state=state, train_step=step, train_iter=train_iter, evaluators=evaluators,
                   images_per_step=int(dc.batch_size), extra_modes={"complete": complete_mode})
