"""Fine-tunes a selective-masking-pretrained U-Net ResNet-34 on PASCAL VOC 2012 segmentation (21 classes).

  python -m maskseg_jax.main --config=configs/selective_finetune_voc.py --config.data.root=/data/VOC2012 \
      --config.model.init_from=runs/sel_voc --workdir=runs/sel_voc_ft

`model.init_from` is the pretraining run folder (its last finished stage is loaded; only the 3-channel head is
replaced); leave it empty for the no-pretraining baseline. Cross entropy, Adam 3e-3, 256 x 256 crops, mIoU with
per-class IoU on `val`. Expect selective > random-masking > no pretraining (the paper: about +2.5-2.9 mIoU).
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import finetune_defaults


def get_config(arg: str | None = None):
  del arg
  c = base_config()
  c.data.name = "voc"
  c.data.root = "data/VOC2012"
  c.data.num_classes = 21
  c.data.crop_size = (256, 256)
  c.data.eval_size = (512, 512)
  c.data.batch_size = 32
  c.data.eval_batch_size = 16
  finetune_defaults(c)
  c.optim.warmup_steps = 200
  c.train.steps = 20000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  c.lock()
  return c
