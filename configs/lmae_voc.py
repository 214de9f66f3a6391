"""L-MAE label completion on PASCAL VOC 2012 (21 classes) with the paper's settings (the flagship run).

  python -m maskseg_jax.main --config=configs/lmae_voc.py --workdir=runs/lmae_voc_0.5
  python -m maskseg_jax.main --config=configs/lmae_voc.py:0.6 --config.data.root=/data/VOCdevkit/VOC2012

Put VOC 2012 (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) at data/VOC2012 under the working
directory, or point data.root at it; without it the command stops with an error naming the expected layout.
arg: the training mask ratio (default 0.5; the completion command routes between runs at several ratios).

Paper settings: EB8/DB6/ED1440/DD720 (250M parameters), patch 16 at 224 input from random 448 crops, batch 24,
Adam (b1 0.9) with coupled L2 1e-4, reduce-on-plateau factor 0.8 / patience 5 (6 in optax) / threshold 1e-3
checked once per epoch (61 steps of the 1464 `train` images), 400 epochs. Our choices where the paper is
silent: lr 1e-4 (no value is given; 1e-3, PyTorch's Adam default, is unstable for a 250M ViT trained from
scratch without warm-up), drop path 0.1, 12 heads; gamma 0.1 in the class weights (eq. 10 with gamma 1 gives
VOC's background (70% of pixels) a weight of exactly 0 in float32, i.e. it would never be learned).
Expect (paper, val, 224 input): PA-mIoU 91.0 and global mIoU 94.6 at m=0.5; PA-mIoU 89.1 at m=0.6. Needs an
accelerator (~24k steps of a 250M ViT); on a 2-core CPU use configs/lmae_synthetic.py or lmae_camvid.py:cpu.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.lmae_config import apply_lmae


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "voc"
  c.data.root = "data/VOC2012"
  c.data.num_classes = 21
  c.data.train_split = "train"
  c.data.val_split = "val"
  c.data.crop_size = (448, 448)
  c.data.batch_size = 24
  c.data.eval_batch_size = 24
  c.data.num_workers = 4
  apply_lmae(c, size="paper", patch_size=16, image_size=224, mask_ratio=float(arg) if arg else 0.5,
             background_classes=(0,), gamma=0.1)
  c.model.drop_path = 0.1
  c.optim.lr = 1e-4
  c.optim.plateau_accumulation = 61         # steps per epoch: 1464 // 24
  c.train.steps = 400 * 61
  c.train.log_every = 61
  c.train.eval_every = 20 * 61
  c.train.checkpoint_every = 10 * 61
  c.lock()
  return c
