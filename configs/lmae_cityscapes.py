"""L-MAE label completion on Cityscapes (19 train ids) with the paper's settings.

  python -m maskseg_jax.main --config=configs/lmae_cityscapes.py --config.data.root=/data/cityscapes
  python -m maskseg_jax.main --config=configs/lmae_cityscapes.py:0.6 ...    # arg: training mask ratio

data.root holds leftImg8bit/ and gtFine/ with *_gtFine_labelTrainIds.png (cityscapesscripts'
createTrainIdLabelImgs.py). Paper: random 448x448 crops of the full-resolution images, batch 48, the VOC
optimizer (Adam, L2 1e-4, plateau 0.8 / patience 5 / threshold 1e-3), 400 epochs (62 steps each). Cityscapes
has no background class (background_classes=()): Background-First masks void patches first, so completion
fills void and unknown pixels. Our choices: lr 1e-4, drop path 0.1, eval on val images resized to the 448x448
model input (the paper does not say how it evaluated full frames).
Expect (paper): PA-mIoU 86.4 at m=0.5, 85.6 at m=0.6. Needs an accelerator.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.lmae_config import apply_lmae


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.crop_size = (448, 448)
  c.data.batch_size = 48
  c.data.eval_batch_size = 16
  c.data.num_workers = 8
  apply_lmae(c, size="paper", patch_size=16, image_size=448, mask_ratio=float(arg) if arg else 0.5,
             background_classes=(), gamma=0.1)
  c.model.drop_path = 0.1
  c.optim.lr = 1e-4
  c.optim.plateau_accumulation = 62         # steps per epoch: 2975 // 48
  c.train.steps = 400 * 62
  c.train.log_every = 62
  c.train.eval_every = 20 * 62
  c.train.checkpoint_every = 10 * 62
  c.lock()
  return c
