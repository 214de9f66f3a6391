"""Fine-tunes a selective-masking-pretrained U-Net on CamVid (11 classes, ../shared/data/camvid).

  python -m maskseg_jax.main --config=configs/selective_finetune_camvid.py:cpu \
      --config.model.init_from=runs/sel_camvid_cpu --workdir=runs/sel_camvid_cpu_ft

arg: `cpu` (quarter-size images, 80 x 112 crops, ResNet-34 U-Net width 0.25 as in selective_camvid.py:cpu,
600 steps: a few minutes on 2 cores) or "" (full size, 352 x 480 crops, full width). `model.init_from` is the
pretraining run folder (last finished stage; the head is replaced); empty trains from scratch. Cross entropy,
Adam 3e-3, val mIoU with per-class IoU. `experiments/selective_camvid.py` compares the three initializations.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import finetune_defaults


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "camvid"
  c.data.root = ""
  c.data.num_classes = 11
  finetune_defaults(c)
  if arg == "cpu":
    c.data.image_scale = 0.25
    c.data.crop_size = (80, 112)
    c.data.eval_size = (96, 120)
    c.data.batch_size = 8
    c.data.eval_batch_size = 16
    c.model.width = 0.25
    c.optim.warmup_steps = 20
    c.train.steps = 600
    c.train.log_every = 50
    c.train.eval_every = 300
    c.train.checkpoint_every = 300
  elif not arg:
    c.data.crop_size = (352, 480)
    c.data.eval_size = (360, 480)
    c.data.batch_size = 16
    c.optim.warmup_steps = 100
    c.train.steps = 10000
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
  else:
    raise ValueError(f"selective_finetune_camvid: arg {arg!r}; expected '' or 'cpu'")
  c.lock()
  return c
