"""Supervised segmentation (DeepLabV3+, U-Net, FCN): the baselines, fine-tuning and evaluation.

  python -m maskseg_jax.main --config=supervised.py                    # synthetic scenes, no data needed
  python -m maskseg_jax.main --config=supervised.py:camvid,cpu        # CamVid, minutes on 2 CPU cores
  python -m maskseg_jax.main --config=supervised.py:voc,366 --config.data.root=/data/VOCdevkit/VOC2012

arg: comma-separated, any order: `<dataset>[,cpu][,<model>][,<n>]`.
  dataset  synthetic (default; the embedded scenes, DeepLabV3+ ResNet-18 width 0.25, 300 steps: a few minutes
           on 2 cores, val mIoU well above chance, README) | camvid (../shared/data/camvid, 11 classes; full size:
           ResNet-50 at 352x480 crops, 10000 steps) | cityscapes (ResNet-101, crop 801, sliding-window eval;
           put leftImg8bit/ and gtFine/ with *_labelTrainIds.png under data.root) | voc (ResNet-101, crop 321,
           the semi-supervised papers' baseline; VOC 2012 under data.root).
  cpu      camvid only: ResNet-18 width 0.25, 80x112 crops of quarter-size images, 600 steps (a few minutes).
  model    deeplabv3plus (default) | unet | fcn (their canonical settings, `config_base.MODEL_DEFAULTS`).
  n        voc only: a labelled split size (92, 183, 366, 732, 1464) read from `splits/voc/<n>/labeled.txt` under
           data.root (UniMatch's split files); default the 1464 `train` names. Expect (paper, R101, crop 321):
           45.1 / 55.3 / 64.8 / 69.7 / 73.5 val mIoU.
"""

from maskseg_jax.config_base import base_config, parse_arg, refuse, set_model

AXES = dict(dataset=("synthetic", "camvid", "cityscapes", "voc"), size=("full", "cpu"),
            model=("deeplabv3plus", "unet", "fcn"))
# every documented arg (tests load each one)
ARGS = ("", "unet", "fcn", "camvid", "camvid,cpu", "camvid,cpu,unet", "camvid,cpu,fcn", "camvid,unet", "cityscapes",
        "voc", "voc,92", "voc,1464")
VOC_SPLITS = (92, 183, 366, 732, 1464)


def synthetic(c, a):
  c.data.crop_size = c.data.eval_size = (64, 64)
  c.data.batch_size = c.data.eval_batch_size = 16
  c.model.backbone, c.model.width = "resnet18", 0.25
  c.optim.lr, c.optim.head_lr_mult = 0.05, 1.0
  c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 300, 25, 100, 100


def camvid(c, a):
  c.data.root = ""  # default: ../shared/data/camvid beside the checkout
  c.data.num_classes = 11
  if a["size"] == "cpu":
    c.data.image_scale = 0.25          # 360x480 -> 90x120 before augmentation
    c.data.crop_size, c.data.eval_size = (80, 112), (96, 120)
    c.data.batch_size, c.data.eval_batch_size = 8, 16
    c.model.backbone, c.model.width = "resnet18", 0.25
    c.optim.lr, c.optim.head_lr_mult = 0.05, 1.0
    c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 600, 50, 200, 200
  else:
    c.data.crop_size, c.data.eval_size = (352, 480), (360, 480)
    c.data.batch_size = 16
    c.optim.lr = 0.01
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 10000, 1000, 1000


def cityscapes(c, a):
  c.data.root, c.data.num_classes = "data/cityscapes", 19
  c.data.crop_size, c.data.batch_size, c.data.eval_batch_size = (801, 801), 16, 8
  c.data.eval_mode, c.data.eval_size = "sliding", (1024, 2048)
  c.data.eval_window, c.data.eval_stride = (801, 801), (534, 534)
  if a["model"] == "deeplabv3plus":
    c.model.backbone = "resnet101"
  c.optim.lr, c.optim.head_lr_mult = 0.005, 1.0
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = 40000, 4000, 2000


def voc(c, a):
  n = a["n"]
  c.data.root, c.data.num_classes = "data/VOC2012", 21
  c.data.train_split = f"splits/voc/{int(n)}/labeled.txt" if n else "train"
  c.data.crop_size, c.data.eval_size = (321, 321), (512, 512)
  c.data.batch_size = c.data.eval_batch_size = 8
  if a["model"] == "deeplabv3plus":
    c.model.backbone = "resnet101"
  c.optim.lr, c.optim.head_lr_mult = 0.001, 10.0
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = 30000, 2000, 1000


DATASETS = dict(synthetic=synthetic, camvid=camvid, cityscapes=cityscapes, voc=voc)


def get_config(arg: str | None = None):
  a = parse_arg(arg, "supervised", AXES, number="n")
  if a["size"] == "cpu" and a["dataset"] != "camvid":
    refuse("supervised", arg, "size cpu exists for camvid only (synthetic is CPU-sized already)")
  if a["n"] is not None and (a["dataset"] != "voc" or a["n"] not in VOC_SPLITS):
    refuse("supervised", arg, f"a labelled split size is for voc only, one of {VOC_SPLITS}")
  c = base_config()
  c.method = "supervised"
  c.data.name = a["dataset"]
  set_model(c, a["model"])
  DATASETS[a["dataset"]](c, a)
  c.lock()
  return c
