"""UniMatch (CVPR 2023) on PASCAL VOC 2012: DeepLabV3+ ResNet-101 (deep stem, output stride 16), crop 321,
8 labeled + 8 unlabeled per step, SGD lr 0.001 (head x10), poly 0.9, 80 epochs of the unlabeled set, tau 0.95.

  python -m maskseg_jax.main --config=configs/unimatch_voc.py:1464 --config.data.root=/data/VOC2012 \
      --workdir=/runs/unimatch_voc_1464

arg: the labeled split size, 92 | 183 | 366 | 732 | 1464 (default 1464): reads UniMatch's split files
`splits/voc/<n>/labeled.txt` and `unlabeled.txt` under data.root (`image_path label_path` pairs, or image names
read from JPEGImages/ and SegmentationClass/, falling back to SegmentationClassAug/); the unlabeled part is the
rest of the 10582-image augmented set.
Expected val mIoU (paper, R101 ImageNet-pretrained, crop 321): 75.2 / 77.2 / 78.8 / 79.9 / 81.2 for
92 / 183 / 366 / 732 / 1464. The paper's backbone is ImageNet-pretrained: pass one with --config.model.init_from
(a run folder of this library); from scratch expect far lower numbers.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.semi_config import add_semi_section

VOC_AUG = 10582          # images of the augmented train set (labeled + unlabeled)
SPLITS = (92, 183, 366, 732, 1464)
EPOCHS = 80


def voc_config(arg: str | None, variant: str, default_split: int = 1464, **semi):
  """The UniMatch VOC recipe with the preset `variant` (S4MIM and MaskMatch configs build on it)."""
  n = int(arg) if arg else default_split
  if n not in SPLITS:
    raise ValueError(f"VOC labeled split {n} is not one of UniMatch's {SPLITS}")
  c = base_config()
  c.method = "semi_supervised"
  c.data.name = "voc"
  c.data.root = "data/VOC2012"
  c.data.num_classes = 21
  c.data.train_split = f"splits/voc/{n}/labeled.txt"
  c.data.val_split = "val"
  c.data.crop_size = (321, 321)
  c.data.eval_size = (512, 512)       # whole-image eval ('original' mode); VOC images are at most 500x500
  c.data.batch_size = 8               # + 8 unlabeled
  c.data.eval_batch_size = 8
  c.model.name = "deeplabv3plus"
  c.model.backbone = "resnet101"
  c.model.deep_stem = True
  c.model.output_stride = 16
  c.optim.name = "sgd"
  c.optim.lr = 0.001
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.head_lr_mult = 10.0
  c.optim.schedule = "poly"
  c.optim.poly_power = 0.9
  c.train.steps = EPOCHS * ((VOC_AUG - n) // c.data.batch_size)  # an epoch = one pass over the unlabeled set
  c.train.log_every = 50
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  add_semi_section(c, variant, unlabeled_split=f"splits/voc/{n}/unlabeled.txt", tau=0.95, **semi)
  return c


def get_config(arg: str | None = None):
  c = voc_config(arg, "unimatch")
  c.lock()
  return c
