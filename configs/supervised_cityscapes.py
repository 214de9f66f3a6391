"""Supervised DeepLabV3+ ResNet-101 on Cityscapes (19 classes, gtFine labelTrainIds), sliding-window eval.

  python -m maskseg_jax.main --config=configs/supervised_cityscapes.py --config.data.root=/data/cityscapes

Put leftImg8bit/ and gtFine/ (with *_labelTrainIds.png made by cityscapesscripts) under data.root.
"""

from maskseg_jax.config_base import base_config


def get_config(arg: str | None = None):
  del arg
  c = base_config()
  c.method = "supervised"
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.crop_size = (801, 801)
  c.data.batch_size = 16
  c.data.eval_batch_size = 8
  c.data.eval_mode = "sliding"
  c.data.eval_size = (1024, 2048)
  c.data.eval_window = (801, 801)
  c.data.eval_stride = (534, 534)
  c.model.backbone = "resnet101"
  c.optim.lr = 0.005
  c.optim.head_lr_mult = 1.0
  c.train.steps = 40000
  c.train.eval_every = 4000
  c.train.checkpoint_every = 2000
  c.lock()
  return c
