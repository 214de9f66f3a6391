"""Semi-supervised segmentation: UniMatch weak-to-strong consistency, plus S4MIM and MaskMatch terms.

  python -m maskseg_jax.main --config=semi.py:synthetic --workdir=/tmp/semi_synthetic          # no data
  python -m maskseg_jax.main --config=semi.py:camvid,recipe,unimatch --workdir=/tmp/camvid_unimatch
  python -m maskseg_jax.main --config=semi.py:voc,1464,s4mim --config.data.root=/data/VOC2012 \
      --workdir=/runs/s4mim_voc_1464
  python experiments/semi_camvid.py --size=recipe --seeds=0,1      # every variant on CamVid, with the margin table

arg: comma-separated, any order: `<dataset>[,cpu|recipe][,<variant>][,<n>]`.
  variant  unimatch (default) | supervised (labeled term only) | fixmatch | s4mim (UniMatch + class-wise MIM,
           EMA prototype aggregation, MIM in semantic space) | maskmatch (UniMatch + masked-patch consistency
           with pseudo-labels ensembled over scales 0.75 / 1.0 / 1.25) | all. S4MIM's weights (l_rec 1, l_agg 1,
           l_sem 0.5, ratio 0.5, patch 32, momentum 0.99) and MaskMatch's (l_mask 1, ratio 0.7, patch 32) are our
           choices (methods/semi_supervised/config.py; ../shared/specs/semi_supervised.md).
  voc (default)  UniMatch's VOC recipe: DeepLabV3+ ResNet-101 (deep stem, OS 16), crop 321, 8 labeled + 8
           unlabeled per step, SGD lr 0.001 (head x10), poly 0.9, 80 epochs of the unlabeled set, tau 0.95.
           n = the labeled split, 92 | 183 | 366 | 732 | 1464 (default 1464): UniMatch's split files
           `splits/voc/<n>/{labeled,unlabeled}.txt` under data.root. Expect (paper, R101 ImageNet-pretrained,
           pass one with --config.model.init_from): 75.2 / 77.2 / 78.8 / 79.9 / 81.2 val mIoU; from scratch far
           less. The S4MIM and MaskMatch papers' gains over UniMatch are not reproduced here.
  cityscapes  DeepLabV3+ ResNet-101, crop 801, 8 + 8, SGD lr 0.005 (head x1), 240 epochs, OHEM (prob < 0.7, at
           least 200000 pixels) for the labeled loss, sliding-window eval (801, stride 534). n: 1/n of the 2975
           train images labeled, 16 | 8 | 4 | 2 (default 8), split generated into <workdir>/splits, nested
           across n. Expect UniMatch's published high 70s with an ImageNet backbone.
  synthetic  DeepLabV3+ ResNet-18 width 0.25, 32 labeled + 224 unlabeled, 300 steps (~2 min): checks the wiring
           (measured val mIoU unimatch 0.650, supervised 0.716; use camvid to compare methods).
  camvid   ../shared/data/camvid, 1/n of the 367 train images labeled (default n = 8: 46 images), the rest
           unlabeled, split files generated into the workdir. Full size: DeepLabV3+ ResNet-50 at 352x480 crops,
           80 epochs of the unlabeled set. `cpu`: quarter-size images, 72x96 crops, ResNet-18 width 0.25, 240
           steps (2-8 minutes): measured supervised 0.250, FixMatch 0.219, UniMatch 0.238, +S4MIM 0.225,
           +MaskMatch 0.123 (collapse: see README). `recipe` (this project's regime): the cpu model, 3600 steps,
           the first 2400 labeled-only, the unlabeled terms ramped in over 100 steps, MaskMatch's ensemble
           guarded by `confident`. Measured (2 seeds): supervised 0.447, UniMatch 0.444; supervised on all 367
           labels 0.420 (at this size labels are not the bottleneck; README has the diagnosis). Diagnostics are
           on for camvid (`semi_diag/*`: share passing tau, pseudo-label accuracy against the unlabeled truth,
           class shares). Our extensions, off unless set: `--config.semi.ensemble_guard=confident|prior`,
           `--config.semi.threshold=flexmatch`. From a selective/random-masking pretraining:
           `--config.model.backbone=resnet34 --config.model.deep_stem=False --config.model.init_from=encoder:RUN`
           (its encoder into DeepLabV3+), or the pretraining's own U-Net, every weight but the head:
           `--config.model.name=unet --config.model.backbone=resnet34 --config.model.deep_stem=False
           --config.model.init_from=RUN` (UniMatch's FP branch then drops channels of all four encoder maps).
"""

from maskseg_jax.config_base import base_config, parse_arg, refuse
from maskseg_jax.methods.semi_supervised.config import VARIANTS, add_semi_section

AXES = dict(dataset=("voc", "cityscapes", "synthetic", "camvid"), size=("full", "cpu", "recipe"),
            variant=("unimatch", *(v for v in VARIANTS if v != "unimatch")))
ARGS = ("", "voc,92", "voc,s4mim", "voc,maskmatch,366", "cityscapes", "cityscapes,16,supervised", "synthetic",
        "synthetic,supervised", "camvid", "camvid,cpu", "camvid,cpu,supervised", "camvid,recipe",
        "camvid,recipe,maskmatch", "camvid,recipe,unimatch,32")
VOC_AUG = 10582          # images of VOC's augmented train set (labeled + unlabeled)
VOC_SPLITS = (92, 183, 366, 732, 1464)
CITYSCAPES_TRAIN, CITYSCAPES_N = 2975, (16, 8, 4, 2)
CAMVID_TRAIN = 367       # images in ImageSets/Segmentation/train.txt
# `recipe`: this project's CamVid regime (our extensions, measured in the README): the cpu model and crops, a
# 3600-step schedule whose first 2400 steps are labeled-only (the supervised baseline's steps, at its cost), then
# the unlabeled terms ramped in over 100 steps; MaskMatch's ensemble guarded by `confident`.
RECIPE = dict(steps=3600, warmup_steps=2400, rampup_steps=100)


def voc(c, a):
  n = int(a["n"] or 1464)
  if n not in VOC_SPLITS:
    refuse("semi", arg=a["arg"], what=f"VOC labeled split {n} is not one of UniMatch's {VOC_SPLITS}")
  c.data.root, c.data.num_classes = "data/VOC2012", 21
  c.data.train_split, c.data.val_split = f"splits/voc/{n}/labeled.txt", "val"
  c.data.crop_size = (321, 321)
  c.data.eval_size = (512, 512)       # whole-image eval ('original' mode); VOC images are at most 500x500
  c.data.batch_size = c.data.eval_batch_size = 8
  c.model.backbone, c.model.deep_stem, c.model.output_stride = "resnet101", True, 16
  c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay = "sgd", 0.001, 0.9, 1e-4
  c.optim.head_lr_mult, c.optim.schedule, c.optim.poly_power = 10.0, "poly", 0.9
  c.train.steps = 80 * ((VOC_AUG - n) // c.data.batch_size)  # an epoch = one pass over the unlabeled set
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 50, 2000, 1000
  add_semi_section(c, a["variant"], unlabeled_split=f"splits/voc/{n}/unlabeled.txt", tau=0.95)


def cityscapes(c, a):
  n = int(a["n"] or 8)
  if n not in CITYSCAPES_N:
    refuse("semi", arg=a["arg"], what=f"Cityscapes labeled fraction 1/{n}: expected n in {CITYSCAPES_N}")
  c.data.root, c.data.num_classes = "data/cityscapes", 19
  c.data.train_split, c.data.val_split = "train", "val"
  c.data.crop_size, c.data.batch_size, c.data.eval_batch_size = (801, 801), 8, 8
  c.data.eval_mode, c.data.eval_size = "sliding", (1024, 2048)
  c.data.eval_window, c.data.eval_stride = (801, 801), (534, 534)
  c.model.backbone = "resnet101"
  c.optim.lr, c.optim.head_lr_mult, c.optim.weight_decay = 0.005, 1.0, 1e-4
  labeled = round(CITYSCAPES_TRAIN / n)
  c.train.steps = 240 * ((CITYSCAPES_TRAIN - labeled) // c.data.batch_size)
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 50, 4000, 1000
  add_semi_section(c, a["variant"], labeled_fraction=1.0 / n, unlabeled_split="", tau=0.0, ohem=True,
                   ohem_thresh=0.7, ohem_min_kept=200000)


def synthetic(c, a):
  c.data.num_classes = 6
  c.data.synthetic.num_train = 256
  c.data.train_split = "train[:32]"       # the labeled images
  c.data.crop_size = c.data.eval_size = (64, 64)
  c.data.batch_size, c.data.eval_batch_size = 8, 16
  c.model.backbone, c.model.width = "resnet18", 0.25
  c.optim.lr, c.optim.head_lr_mult = 0.02, 1.0
  c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 300, 25, 100, 100
  # 64 px crops: mask patches of 8 px keep the paper's ~10x10 patch grid of a 321 crop within reach.
  add_semi_section(c, a["variant"], unlabeled_split="train[32:]", tau=0.9, mim_patch=8, mask_patch=8)


def camvid_steps(epochs: int, batch: int, labeled_fraction: float) -> int:
  """UniMatch's schedule: an epoch is one pass over the unlabeled set (the labeled set repeats within it)."""
  labeled = max(1, round(CAMVID_TRAIN * labeled_fraction))
  return epochs * ((CAMVID_TRAIN - labeled) // batch)


def camvid(c, a):
  fraction = 1.0 / (a["n"] or 8)
  c.data.root = ""  # default: ../shared/data/camvid beside the checkout
  c.data.num_classes = 11
  if a["size"] == "full":
    c.data.crop_size, c.data.eval_size, c.data.batch_size = (352, 480), (360, 480), 8
    c.model.backbone = "resnet50"
    c.optim.lr = 0.01
    c.train.steps = camvid_steps(80, c.data.batch_size, fraction)
    c.train.eval_every = c.train.checkpoint_every = 400
    patch = 32
  else:
    c.data.image_scale = 0.25          # 360x480 -> 90x120 before augmentation
    c.data.crop_size, c.data.eval_size = (72, 96), (96, 120)
    c.data.batch_size, c.data.eval_batch_size = 8, 16
    c.model.backbone, c.model.width = "resnet18", 0.25
    c.optim.lr, c.optim.head_lr_mult = 0.05, 1.0
    c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 240, 25, 120, 120
    patch = 8                          # ~9x12 patches per crop, as 32 px patches on a 321 crop
  recipe = {}
  if a["size"] == "recipe":
    c.train.steps = RECIPE["steps"]
    c.train.eval_every = c.train.checkpoint_every = 600
    recipe = dict(warmup_steps=RECIPE["warmup_steps"], rampup_steps=RECIPE["rampup_steps"])
    if a["variant"] in ("maskmatch", "all"):
      recipe["ensemble_guard"] = "confident"
  # diagnostics: CamVid's unlabeled images have labels, so pseudo-labels are scored against them (never in a loss)
  add_semi_section(c, a["variant"], labeled_fraction=fraction, unlabeled_split="train", tau=0.95, mim_patch=patch,
                   mask_patch=patch, diagnostics=True, diag_images=32, **recipe)


DATASETS = dict(voc=voc, cityscapes=cityscapes, synthetic=synthetic, camvid=camvid)


def get_config(arg: str | None = None):
  a = parse_arg(arg, "semi", AXES, number="n")
  a["arg"] = arg
  if a["size"] != "full" and a["dataset"] != "camvid":
    refuse("semi", arg, f"size {a['size']} exists for camvid only (synthetic is CPU-sized already)")
  if a["n"] is not None and (a["dataset"] == "synthetic" or a["n"] != int(a["n"]) or a["n"] < 1):
    refuse("semi", arg, "n (labeled split) is a whole number, for voc, cityscapes or camvid")
  c = base_config()
  c.method = "semi_supervised"
  c.data.name = a["dataset"]
  c.model.name = "deeplabv3plus"
  # UniMatch's DeepLabV3+: no dropout in the ASPP, bilinear upsampling with corners aligned
  c.model.dropout, c.model.align_corners = 0.0, True
  DATASETS[a["dataset"]](c, a)
  c.lock()
  return c
