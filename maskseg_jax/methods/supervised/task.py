"""Supervised segmentation (DeepLabV3+, U-Net, FCN): cross entropy on labelled crops, mIoU on val."""

from __future__ import annotations

import jax

from maskseg_jax import optim
from maskseg_jax.data import pipeline
from maskseg_jax.methods import base, segmentation


def build(config, mesh, workdir: str) -> base.Task:
  dc = config.data
  train_src, val_src = segmentation.load_sources(config)
  mdef, tx, state = segmentation.init_model_state(config, dc.num_classes)
  train_iter = pipeline.train_iterator(train_src, dc, config.seed, process_index=jax.process_index(),
                                       process_count=jax.process_count())
  step = segmentation.supervised_step(mdef, tx, optim.learning_rate(config.optim, config.train.steps),
                                      ignore_label=dc.ignore_label)
  evaluator = segmentation.make_evaluator(config, mdef, val_src, mesh)

  predict = segmentation.make_predict(config, mdef, evaluator, val_src, workdir)

  return base.Task(state=state, train_step=step, train_iter=train_iter, evaluators=[evaluator],
                   images_per_step=dc.batch_size, predict=predict)
