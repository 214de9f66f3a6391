"""Selective-masking pretraining of a U-Net ResNet-34 on PASCAL VOC 2012 images (the authors' setup).

  python -m maskseg_jax.main --config=configs/selective_voc.py --config.data.root=/data/VOC2012 \
      --workdir=runs/sel_voc
  python -m maskseg_jax.main --config=configs/selective_finetune_voc.py \
      --config.data.root=/data/VOC2012 --config.model.init_from=runs/sel_voc --workdir=runs/sel_voc_ft

10 partitions of the `train` images (labels unused; `--config.data.train_split=<split file>` pretrains on
more, e.g. the 10582 augmented-set names), each stage 8000 steps of batch 128 at 256 x 256 (about the authors'
1000 epochs of a partition), 21 x 21 tiles of 12 px, half of them masked. Meant for an accelerator: stages
resume from their checkpoints, so it can run in preemptible slices. `:random` is the random-masking baseline
(one stage on the whole set, the same 80000 steps); `:random_stages` uses the same stages with random masks.
Expect each stage's `val_random/loss` to fall below the previous stage's, and the fine-tuned U-Net to beat
random-masking pretraining, which beats training from scratch (the paper reports about +2.5-2.9 mIoU).
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import pretrain_defaults


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "voc"
  c.data.root = "data/VOC2012"
  c.data.num_classes = 21
  c.data.crop_size = (256, 256)
  c.data.batch_size = 128
  c.data.eval_batch_size = 64
  c.data.num_workers = 8
  pretrain_defaults(c, strategy=arg or "selective", steps_per_stage=8000, score_batch_size=128)
  c.optim.warmup_steps = 80
  c.model.dtype = "bfloat16"
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  c.lock()
  return c
