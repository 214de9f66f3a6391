"""Selective-masking self-supervised pretraining of a U-Net (spec ../shared/specs/selective_masking.md).

  config.py   the `selective` config section, pretraining and fine-tuning defaults
  tiles.py    tile grids and tile masks with static shapes
  data.py     partitions, stage plans, the reconstruction transform (canonical views, masks)
  scoring.py  batched per-tile reconstruction loss of a trained stage (chooses the next stage's masks)
  task.py     `build` of one stage: model, L1 + MS-SSIM step, reconstruction evaluator; `run` hands over to
  stages.py   the stage driver: partitions, scoring passes and one training-loop run per stage
Fine-tuning is the `supervised` method with `model.init_from` a pretraining run.
"""
