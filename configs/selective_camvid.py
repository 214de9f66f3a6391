"""Selective-masking pretraining of a U-Net on CamVid `train` images (../shared/data/camvid, labels unused).

  python -m maskseg_jax.main --config=configs/selective_camvid.py:cpu --workdir=runs/sel_camvid_cpu
  python -m maskseg_jax.main --config=configs/selective_finetune_camvid.py:cpu \
      --config.model.init_from=runs/sel_camvid_cpu --workdir=runs/sel_camvid_cpu_ft

arg: `cpu` (CamVid at a quarter size, 90 x 120, squashed to 64 x 64 canonical views with 8 x 8 tiles;
ResNet-34 U-Net at width 0.25; 10 stages of 100 steps of batch 16: 40-50 s of training and ~10 s of scoring
and eval per stage on 2 cores, about 10 minutes), or "" for the full-size run (256 x 256, 21 x 21 tiles, full
width, 1000 steps of batch 32 per stage, an accelerator). Append `_random` / `_random_stages` (e.g.
`cpu_random`) for the random-masking baselines with the same budget. `experiments/selective_camvid.py` runs the
whole comparison (selective vs random vs no pretraining, fine-tuned); its docstring has the measured table.
Measured with 4 stages of 100 steps: `val_random/loss` 0.56 / 0.56 / 0.52 / 0.53 after stages 0-3, and the
selected tiles are harder than random ones (`val/l1_masked` 0.15-0.17 vs `val_random/l1_masked` 0.11-0.14).
At CPU scale the fine-tuning differences are within seed noise.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import pretrain_defaults


def get_config(arg: str | None = None):
  arg = arg or ""
  size, _, strategy = arg.partition("_")
  if size not in ("", "cpu"):
    size, strategy = "", arg
  c = base_config()
  c.data.name = "camvid"
  c.data.root = ""  # default: ../shared/data/camvid beside the checkout
  c.data.num_classes = 11
  if size == "cpu":
    c.data.image_scale = 0.25
    c.data.crop_size = (64, 64)
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    pretrain_defaults(c, strategy=strategy or "selective", steps_per_stage=100, grid=8, score_batch_size=32,
                      ms_ssim_weights=(0.3, 0.3, 0.4), ms_ssim_window=7)
    c.model.width = 0.25
    c.optim.warmup_steps = 5
    c.train.log_every = 25
    c.train.eval_every = 100
    c.train.checkpoint_every = 50
  else:
    c.data.crop_size = (256, 256)
    c.data.batch_size = 32
    c.data.eval_batch_size = 32
    pretrain_defaults(c, strategy=strategy or "selective", steps_per_stage=1000, score_batch_size=32)
    c.optim.warmup_steps = 10
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
  c.lock()
  return c
