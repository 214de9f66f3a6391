"""Semi-supervised segmentation: `build(config, mesh, workdir)` wires the package's modules into a Task
(the map: `methods/semi_supervised/__init__.py`)."""

from __future__ import annotations

import dataclasses

import jax

from maskseg_jax import optim
from maskseg_jax.methods import base, segmentation
from maskseg_jax.methods.semi_supervised import diagnostics as diag
from maskseg_jax.methods.semi_supervised import streams as semi_streams
from maskseg_jax.methods.semi_supervised.model import build_model_and_state, labeled_class_prior
from maskseg_jax.methods.semi_supervised.step import make_train_step, make_warmup_step, pseudo_labels_for
from maskseg_jax.methods.semi_supervised.terms import Terms, class_thresholds


def diagnostics_evaluator(config, mdef, terms: Terms, unlabeled_src, mesh) -> diag.SemiDiagnostics:
  """Per-eval pseudo-label diagnostics on the first `semi.diag_images` unlabeled images (their truth)."""
  def label_fn(state, images, ignore, key):
    return pseudo_labels_for(mdef, state, images, ignore, key, terms)

  thresholds = None if terms.threshold == "fixed" else (lambda state: class_thresholds(terms, state["extra"]))
  return diag.SemiDiagnostics(source=unlabeled_src, data_config=config.data, label_fn=label_fn, mesh=mesh,
                              num_classes=terms.num_classes, num_images=int(config.semi.diag_images),
                              pad_label=semi_streams.strong_augment.UNLABELED_PAD,
                              class_names=getattr(unlabeled_src, "class_names", None), thresholds_fn=thresholds)


def build(config, mesh, workdir: str) -> base.Task:
  terms = Terms.from_config(config)
  dc = config.data
  labeled_src, unlabeled_src, val_src = semi_streams.load_semi_sources(config, workdir, unlabeled=terms.unlabeled)
  # Diagnostics (on by default) need the unlabeled images' truth: off, silently, for a source without labels.
  has_truth = unlabeled_src is not None and semi_streams.carries_truth(unlabeled_src)
  terms = dataclasses.replace(terms, diagnostics=terms.diagnostics and has_truth)
  train_iter = semi_streams.train_stream(config, labeled_src, unlabeled_src, process_index=jax.process_index(),
                                         process_count=jax.process_count(), keep_truth=terms.diagnostics)
  prior = None
  if terms.ensemble_guard == "prior":
    prior = labeled_class_prior(labeled_src, terms.num_classes, terms.ignore_label)
  mdef, tx, state = build_model_and_state(config, terms, prior)
  lr_fn = optim.learning_rate(config.optim, config.train.steps)
  step = make_train_step(mdef, tx, lr_fn, terms)
  evaluator = segmentation.make_evaluator(config, mdef, val_src, mesh)
  evaluators = [evaluator]
  if terms.diagnostics and terms.unlabeled:
    evaluators.append(diagnostics_evaluator(config, mdef, terms, unlabeled_src, mesh))

  predict = segmentation.make_predict(config, mdef, evaluator, val_src, workdir)

  images = int(dc.batch_size) * (2 if terms.unlabeled else 1)
  return base.Task(state=state, train_step=step, train_iter=train_iter, evaluators=evaluators,
                   images_per_step=images, predict=predict, warmup_steps=terms.warmup_steps,
                   warmup_step=make_warmup_step(mdef, tx, lr_fn, terms))
