"""Selective-masking pretraining on a generic images/ + labels/ folder, e.g. the weed sets of the paper.

  python -m maskseg_jax.main --config=configs/selective_folder.py --config.data.root=/data/sugarbeets2016 \
      --workdir=runs/sel_weeds
  python -m maskseg_jax.main --config=configs/selective_finetune_folder.py \
      --config.data.root=/data/sugarbeets2016 --config.model.init_from=runs/sel_weeds --workdir=runs/sel_weeds_ft

The layout is `images/<split>/*.png|jpg` with `labels/<split>/<stem>.png` class ids (maskseg_jax.data.sources
.FolderSource); the paper's weed sets, Nassar 2020 and Sugarbeets 2016, have 3 classes (soil/background,
crop, weed): convert their labels to 0/1/2 ids in that layout. Only `train` images are read for pretraining
(labels are still checked, not used). 256 x 256 canonical views, 21 x 21 tiles, 10 stages of 1000 steps of
batch 64. arg: `random` / `random_stages` for the baselines with the same budget. Expect selective > random >
no pretraining after fine-tuning, with the largest gains on the weed class (the rarest, worst class).
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import pretrain_defaults


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "folder"
  c.data.root = "data/weeds"
  c.data.num_classes = 3
  c.data.crop_size = (256, 256)
  c.data.batch_size = 64
  c.data.eval_batch_size = 32
  c.data.num_workers = 4
  pretrain_defaults(c, strategy=arg or "selective", steps_per_stage=1000, score_batch_size=64)
  c.optim.warmup_steps = 10
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.lock()
  return c
