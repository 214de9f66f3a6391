"""Supervised DeepLabV3+ (tiny ResNet-18 width 0.25) on the embedded synthetic scene dataset.

  python -m maskseg_jax.main --config=configs/supervised_synthetic.py

The embedded default: needs no download, finishes on a 2-core CPU in a few minutes and reaches a val mIoU
well above chance (README, results table). `:unet` / `:fcn` pick the other models.
"""

from maskseg_jax.config_base import base_config, set_model


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "supervised"
  c.data.name = "synthetic"
  c.data.num_classes = 6
  c.data.crop_size = (64, 64)
  c.data.eval_size = (64, 64)
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  set_model(c, arg or "deeplabv3plus", backbone="resnet18", width=0.25)
  c.optim.lr = 0.05
  c.optim.head_lr_mult = 1.0
  c.train.steps = 300
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.lock()
  return c
