"""Semi-supervised Cityscapes (UniMatch recipe): DeepLabV3+ ResNet-101, crop 801, 8 + 8 per step, SGD lr 0.005
(head x1), poly 0.9, 240 epochs of the unlabeled set, tau 0 with OHEM (prob < 0.7, at least 200000 pixels) for
the labeled loss, sliding-window eval (window 801, stride 534).

  python -m maskseg_jax.main --config=configs/semi_cityscapes.py:8_unimatch --config.data.root=/data/cityscapes \
      --workdir=/runs/cityscapes_unimatch_8

arg: `<n>[_<variant>]`: 1/n of the 2975 train images labeled, n in 16 | 8 | 4 | 2 (default 8); variant one of
supervised | fixmatch | unimatch | s4mim | maskmatch | all (default unimatch). The partition is generated once
into <workdir>/splits (deterministic by semi.split_seed; the dataset folder may be read-only) and nested across n.
Expected: UniMatch's published R101 (ImageNet-pretrained) results, high 70s val mIoU across 1/16..1/2 (see the
paper's Cityscapes table); pass a pretrained backbone with --config.model.init_from, from scratch expect far less.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.semi_config import add_semi_section

CITYSCAPES_TRAIN = 2975
EPOCHS = 240


def get_config(arg: str | None = None):
  parts = (arg or "8").split("_", 1)
  n = int(parts[0])
  variant = parts[1] if len(parts) > 1 else "unimatch"
  if n not in (16, 8, 4, 2):
    raise ValueError(f"Cityscapes labeled fraction 1/{n}: expected n in 16, 8, 4, 2")
  c = base_config()
  c.method = "semi_supervised"
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.train_split = "train"
  c.data.val_split = "val"
  c.data.crop_size = (801, 801)
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.eval_mode = "sliding"
  c.data.eval_size = (1024, 2048)
  c.data.eval_window = (801, 801)
  c.data.eval_stride = (534, 534)
  c.model.name = "deeplabv3plus"
  c.model.backbone = "resnet101"
  c.optim.lr = 0.005
  c.optim.head_lr_mult = 1.0
  c.optim.weight_decay = 1e-4
  labeled = round(CITYSCAPES_TRAIN / n)
  c.train.steps = EPOCHS * ((CITYSCAPES_TRAIN - labeled) // c.data.batch_size)
  c.train.log_every = 50
  c.train.eval_every = 4000
  c.train.checkpoint_every = 1000
  add_semi_section(c, variant, labeled_fraction=1.0 / n, unlabeled_split="", tau=0.0, ohem=True,
                   ohem_thresh=0.7, ohem_min_kept=200000)
  c.lock()
  return c
