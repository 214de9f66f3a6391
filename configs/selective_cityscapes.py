"""Selective-masking pretraining of a U-Net ResNet-34 on Cityscapes `train` images (labels unused).

  python -m maskseg_jax.main --config=configs/selective_cityscapes.py --config.data.root=/data/cityscapes \
      --workdir=runs/sel_cs
  python -m maskseg_jax.main --config=configs/selective_finetune_cityscapes.py \
      --config.data.root=/data/cityscapes --config.model.init_from=runs/sel_cs --workdir=runs/sel_cs_ft

Images are read at a quarter of their size (256 x 512) and the whole frame is the canonical view the 21 x 21 tile
grid covers (tiles of 12 x 24 px, the street-scene aspect kept). 10 partitions of 297 images, 2300 steps of
batch 128 per stage (about the authors' 1000 epochs). `:random` / `:random_stages` are the random-masking
baselines with the same budget. Expect selective > random > no pretraining after fine-tuning (the paper:
about +2.5-2.9 mIoU); this config is for an accelerator.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import pretrain_defaults


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.image_scale = 0.25
  c.data.crop_size = (256, 512)
  c.data.batch_size = 128
  c.data.eval_batch_size = 64
  c.data.num_workers = 8
  pretrain_defaults(c, strategy=arg or "selective", steps_per_stage=2300, score_batch_size=128)
  c.optim.warmup_steps = 23
  c.model.dtype = "bfloat16"
  c.train.log_every = 100
  c.train.eval_every = 1150
  c.train.checkpoint_every = 500
  c.lock()
  return c
