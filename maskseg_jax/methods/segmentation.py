"""Shared pieces of every method that trains a per-pixel classifier: model + optimizer state, the supervised
train step, the evaluator and the predict-to-folder mode. Used by `supervised`, selective-masking fine-tuning
and the L-MAE label-augmentation experiment."""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from maskseg_jax import optim, pretrained, sharding
from maskseg_jax.data import sources
from maskseg_jax.losses import segmentation as seg_losses
from maskseg_jax.methods import base
from maskseg_jax.methods.segmentation_eval import SegmentationEvaluator
from maskseg_jax.models import build_model


def val_data_config(data_config):
  """`data` as the val reader sees it: `data.val_name`/`data.val_root`, when set, replace name and root, so a
  model trained on a relabelled folder is scored on the real val set (every other field is shared)."""
  if not data_config.get("val_name", ""):
    return data_config
  dc = ml_collections.ConfigDict(data_config.to_dict())
  dc.name, dc.root = data_config.val_name, data_config.get("val_root", "")
  return dc


def load_sources(config):
  """Train and val sources, validated before any step (bad files fail here, naming the file)."""
  dc = config.data
  train_src = sources.build_source(dc, dc.train_split)
  val_src = sources.build_source(val_data_config(dc), dc.val_split)
  for src in (train_src, val_src):
    sources.validate_source(src, dc.validate_items)
  return train_src, val_src


def init_model_state(config, num_classes: int, model: nnx.Module | None = None):
  """-> (ModelDef, optimizer, initial train state).

  With `model.init_from` set, every weight but the output layer comes from that run's last checkpoint
  (fine-tuning, e.g. from selective-masking pretraining); the output layer stays freshly initialized.
  """
  if model is None:
    rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
    model = build_model(config.model, num_classes, rngs)
    if config.model.get("init_from", ""):
      pretrained.load_into(model, config.model.init_from)
  mdef, params, batch_stats = base.split_model(model)
  tx = optim.make_optimizer(config.optim, config.train.steps, params)
  return mdef, tx, base.new_state(params, batch_stats, tx)


def supervised_step(mdef: base.ModelDef, tx, lr_fn: Callable, *, ignore_label: int = 255,
                    loss_fn: Callable | None = None) -> Callable:
  """Pure train step: CE (or `loss_fn(logits, labels) -> (sum, count)`) on the labelled batch."""
  loss_fn = loss_fn or (lambda logits, labels: seg_losses.cross_entropy(logits, labels,
                                                                        ignore_label=ignore_label))

  def train_step(state, batch, rng):
    def objective(params):
      model = mdef.merge(params, state["batch_stats"])
      base.reseed_dropout(model, rng)
      logits = model(batch["image"], train=True)
      total, count = loss_fn(logits, batch["label"])
      return total / jnp.maximum(count, 1.0), base.batch_stats_of(model)

    (loss, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
    new_state = base.apply_gradients(state, tx, grads, loss, batch_stats)
    lr = lr_fn(state["step"]) * base.current_lr_scale(new_state["opt"])
    return new_state, {"loss": loss, "lr": lr}

  return train_step


def logits_fn(mdef: base.ModelDef) -> Callable:
  def fn(state, images):
    return mdef.merge(state["params"], state["batch_stats"])(images, train=False)
  return fn


def make_evaluator(config, mdef, val_src, mesh, name: str = "val") -> SegmentationEvaluator:
  return SegmentationEvaluator(name=name, source=val_src, data_config=config.data, logits_fn=logits_fn(mdef),
                               mesh=mesh, num_classes=config.data.num_classes,
                               class_names=getattr(val_src, "class_names", None),
                               num_images=config.train.num_images)


def make_predict(config, mdef, evaluator: SegmentationEvaluator, val_src, workdir: str) -> Callable:
  """`mode=predict`: the images of `predict.images` when set (`predict_folder.py`), else the val split, into
  `predict.out` (default `workdir/predictions`)."""
  from maskseg_jax.methods import predict_folder
  pc = config.get("predict", {})
  out = pc.get("out", "") or os.path.join(workdir, "predictions")

  def evaluator_for(source, data_config):
    return SegmentationEvaluator(name="predict", source=source, data_config=data_config,
                                 logits_fn=logits_fn(mdef), mesh=evaluator.mesh,
                                 num_classes=int(data_config.num_classes), num_images=0)

  def predict(state):
    if pc.get("images", ""):
      predict_folder.predict_images(evaluator_for, config.data, state, pc.images, out,
                                    class_names=getattr(val_src, "class_names", None))
      return
    paths = predict_to_folder(evaluator, val_src, state, out)
    print(f"wrote {len(paths)} predicted label maps to {out}")

  return predict


def predict_to_folder(evaluator: SegmentationEvaluator, source, state, out_dir: str) -> list[str]:
  """Writes one grayscale PNG of predicted class ids per image of `source`, cropped to its size."""
  os.makedirs(out_dir, exist_ok=True)
  written, index = [], 0
  for local in evaluator._batches():
    batch = {k: local[k] for k in ("image", "label", "valid")}
    _, pred = evaluator._step(state, sharding.to_global(batch, evaluator.mesh))
    preds = np.asarray(jax.device_get(pred))
    for j in range(int(np.sum(local["valid"]))):
      item = source[index]
      h, w = item["label"].shape
      path = os.path.join(out_dir, f"{item['id']}.png")
      Image.fromarray(preds[j, :h, :w].astype(np.uint8)).save(path)
      written.append(path)
      index += 1
  return written
