"""Fine-tunes a selective-masking-pretrained U-Net ResNet-34 on Cityscapes (19 classes) at quarter size.

  python -m maskseg_jax.main --config=configs/selective_finetune_cityscapes.py \
      --config.data.root=/data/cityscapes --config.model.init_from=runs/sel_cs --workdir=runs/sel_cs_ft

Images at 256 x 512 (as pretrained), 256 x 256 crops, whole-image eval at 256 x 512; cross entropy, Adam 3e-3.
`model.init_from` empty = no pretraining. Expect selective > random-masking > none (paper: about +2.5-2.9 mIoU).
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import finetune_defaults


def get_config(arg: str | None = None):
  del arg
  c = base_config()
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.image_scale = 0.25
  c.data.crop_size = (256, 256)
  c.data.eval_size = (256, 512)
  c.data.batch_size = 32
  c.data.eval_batch_size = 16
  finetune_defaults(c)
  c.optim.warmup_steps = 200
  c.train.steps = 20000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  c.lock()
  return c
