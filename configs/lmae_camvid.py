"""L-MAE label completion on CamVid (11 classes, ../shared/data/camvid, VOC folder layout).

  python -m maskseg_jax.main --config=configs/lmae_camvid.py:cpu            # tiny, minutes on a 2-core CPU
  python -m maskseg_jax.main --config=configs/lmae_camvid.py                # paper-size model (accelerator)

arg: `cpu` and/or a training mask ratio, joined by `_` (`cpu_0.75`, `0.6`; default ratio 0.5).
CamVid has no background class (background_classes=()): Background-First masks void patches first, then
random ones; completion fills void and unknown pixels. `cpu`: images read at 0.25 scale (90x120), random
88x110 crops resized to a 64x80 model input (patch 8, tiny model), batch 16, 1500 steps.
Expect (`cpu`, measured 2026-11-22 on a shared 2-core CPU, ~4 min of CPU time): val PA-mIoU 0.42 and global
mIoU 0.63 (Background-First masks), PA-mIoU 0.44 / mIoU 0.69 with random masks; chance PA-mIoU is below 0.1.
The full-size run has no published CamVid figure (VOC/Cityscapes PA-mIoU are 86-91 in the paper).
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.lmae_config import apply_lmae


def get_config(arg: str | None = None):
  parts = (arg or "").split("_")
  cpu = "cpu" in parts
  ratios = [float(p) for p in parts if p and p != "cpu"]
  ratio = ratios[0] if ratios else 0.5
  c = base_config()
  c.data.name = "camvid"
  c.data.root = ""  # default: ../shared/data/camvid beside the checkout
  c.data.num_classes = 11
  if cpu:
    c.data.image_scale = 0.25
    c.data.crop_size = (88, 110)
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    apply_lmae(c, size="tiny", patch_size=8, image_size=(64, 80), mask_ratio=ratio, background_classes=(),
               gamma=0.1)
    c.optim.lr = 1e-3
    c.optim.plateau_accumulation = 23       # steps per epoch: 367 // 16
    c.train.steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
  else:
    c.data.crop_size = (352, 448)
    c.data.batch_size = 24
    c.data.eval_batch_size = 24
    c.data.num_workers = 4
    apply_lmae(c, size="paper", patch_size=16, image_size=(224, 288), mask_ratio=ratio, background_classes=(),
               gamma=0.1)
    c.model.drop_path = 0.1
    c.optim.lr = 1e-4
    c.optim.plateau_accumulation = 15       # steps per epoch: 367 // 24
    c.train.steps = 400 * 15
    c.train.log_every = 15
    c.train.eval_every = 20 * 15
    c.train.checkpoint_every = 20 * 15
  c.lock()
  return c
