"""Supervised DeepLabV3+ ResNet-101 on PASCAL VOC 2012 (21 classes), the semi-supervised papers' baseline.

  python -m maskseg_jax.main --config=configs/supervised_voc.py --config.data.root=/data/VOCdevkit/VOC2012

Put VOC 2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation; optionally SegmentationClassAug) under
data.root. arg: a labelled split size (92, 183, 366, 732, 1464) reads `splits/voc/<n>/labeled.txt` under
data.root (the UniMatch split files); default: the 1464 `train` names.
Expect (paper, R101, crop 321): 45.1/55.3/64.8/69.7/73.5 val mIoU for 92/183/366/732/1464 labels.
"""

from maskseg_jax.config_base import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.method = "supervised"
  c.data.name = "voc"
  c.data.root = "data/VOC2012"
  c.data.num_classes = 21
  c.data.train_split = f"splits/voc/{arg}/labeled.txt" if arg else "train"
  c.data.crop_size = (321, 321)
  c.data.eval_size = (512, 512)
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.model.backbone = "resnet101"
  c.optim.lr = 0.001
  c.optim.head_lr_mult = 10.0
  c.train.steps = 30000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  c.lock()
  return c
