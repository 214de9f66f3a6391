"""Selective-masking pretraining on the embedded synthetic scenes (tiny: a smoke run of the whole method).

  python -m maskseg_jax.main --config=configs/selective_synthetic.py --workdir=runs/sel_synth
  python -m maskseg_jax.main --config=configs/selective_finetune_synthetic.py \
      --config.model.init_from=runs/sel_synth --workdir=runs/sel_synth_ft

Three stages of 60 steps on 64x64 crops (8 x 8 tiles, width-0.25 ResNet-18 U-Net): about 4 minutes on a shared
2-core CPU. Measured: `val_random/loss` 0.82 / 0.87 / 0.77 after stages 0 / 1 / 2 (each stage restarts its
warmup and sees a new partition), and in every selective stage the selected tiles are harder than random ones
(`val/l1_masked` 0.24 / 0.22 vs `val_random/l1_masked` 0.17). The `scoring_reconstruction` pictures show the
selected tiles mostly on the textured shapes. `:random` runs the random-masking baseline with the same budget
(one stage of 180 steps on the whole set).
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import pretrain_defaults


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "synthetic"
  c.data.num_classes = 6
  c.data.crop_size = (64, 64)
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.data.synthetic.num_train = 240
  c.data.synthetic.num_val = 32
  pretrain_defaults(c, strategy=arg or "selective", num_partitions=3, steps_per_stage=60, grid=8,
                    score_batch_size=16, ms_ssim_weights=(0.3, 0.3, 0.4), ms_ssim_window=7)
  c.model.backbone = "resnet18"
  c.model.width = 0.25
  c.optim.warmup_steps = 5
  c.train.log_every = 20
  c.train.eval_every = 60
  c.train.checkpoint_every = 60
  c.lock()
  return c
