"""Supervised segmentation on CamVid (11 classes, ../shared/data/camvid, PASCAL VOC folder layout).

  python -m maskseg_jax.main --config=configs/supervised_camvid.py            # DeepLabV3+ ResNet-50
  python -m maskseg_jax.main --config=configs/supervised_camvid.py:cpu        # small model, CPU-sized run

arg: `cpu` (ResNet-18 width 0.25 at 96x128 crops from half-size images, a few minutes on 2 cores), or a model name
(`deeplabv3plus`, `unet`, `fcn`) for the full-size run; `cpu_unet`/`cpu_fcn` combine both.
"""

from maskseg_jax.config_base import base_config, set_model


def get_config(arg: str | None = None):
  arg = arg or ""
  cpu = arg.startswith("cpu")
  model = arg.split("_", 1)[1] if "_" in arg else ("deeplabv3plus" if cpu or not arg else arg)
  c = base_config()
  c.method = "supervised"
  c.data.name = "camvid"
  c.data.root = ""  # default: ../shared/data/camvid beside the checkout
  c.data.num_classes = 11
  set_model(c, model)
  if cpu:
    c.data.image_scale = 0.25          # 360x480 -> 90x120 before augmentation
    c.data.crop_size = (80, 112)
    c.data.eval_size = (96, 120)
    c.data.batch_size = 8
    c.data.eval_batch_size = 16
    c.model.backbone = "resnet18"
    c.model.width = 0.25
    c.optim.lr = 0.05
    c.optim.head_lr_mult = 1.0
    c.train.steps = 600
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
  else:
    c.data.crop_size = (352, 480)
    c.data.eval_size = (360, 480)
    c.data.batch_size = 16
    c.optim.lr = 0.01
    c.train.steps = 10000
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
  c.lock()
  return c
