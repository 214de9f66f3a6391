"""Selective-masking self-supervised pretraining of a U-Net (masked-tile reconstruction in partition stages, each
stage's masks chosen by the previous model's per-tile loss), and the supervised fine-tuning that follows.

  python -m maskseg_jax.main --config=selective.py:camvid,cpu --workdir=runs/sel_camvid_cpu
  python -m maskseg_jax.main --config=selective.py:camvid,finetune,cpu \
      --config.model.init_from=runs/sel_camvid_cpu --workdir=runs/sel_camvid_cpu_ft
  python experiments/selective_camvid.py     # selective vs random vs no pretraining, fine-tuned (its table)

arg: comma-separated, any order: `<dataset>[,finetune][,cpu][,<strategy>]`.
  finetune  supervised U-Net fine-tuning (cross entropy, Adam 3e-3, val mIoU with per-class IoU) from the
            pretraining run in `model.init_from` (its last finished stage; only the head is replaced); empty
            trains from scratch, the no-pretraining baseline.
  strategy  selective (default) | random (one stage on the whole set, the same steps) | random_stages (the same
            stages with random masks): the random-masking baselines with the same budget (pretraining only).
  voc (default)  U-Net ResNet-34 on PASCAL VOC 2012 images (the authors' setup, labels unused): 10 partitions of
            `train` (`--config.data.train_split=<split file>` for more), 8000 steps of batch 128 per stage at 256 x 256
            (about the authors' 1000 epochs per partition), 21 x 21 tiles of 12 px, half masked; bfloat16; stages
            resume from checkpoints (preemptible slices). Fine-tuning: 256 crops, eval at 512, 20000 steps.
            Expect each stage's `val_random/loss` below the previous one and selective > random > none after
            fine-tuning (paper: about +2.5-2.9 mIoU). Accelerator.
  cityscapes  images at a quarter size (256 x 512), the whole frame the canonical view (tiles 12 x 24 px), 10
            partitions of 297 images, 2300 steps of batch 128 per stage. Fine-tuning at 256 crops, eval 256 x 512.
  folder    an images/<split>/ + labels/<split>/<stem>.png folder (e.g. the paper's weed sets Nassar 2020 and
            Sugarbeets 2016, 3 classes soil/crop/weed as 0/1/2; data.root): 256 x 256 views, 21 x 21 tiles, 10
            stages of 1000 steps of batch 64. Expect the largest gains on the weed class.
  synthetic  the embedded scenes (a smoke run of the whole method): 3 stages of 60 steps on 64 x 64 crops, ResNet-18
            U-Net width 0.25, ~4 minutes; measured `val_random/loss` 0.82 / 0.87 / 0.77 after stages 0-2, selected
            tiles harder than random (`val/l1_masked` 0.24 / 0.22 vs 0.17). Fine-tuning: 300 steps, measured
            84.3 val mIoU from the pretraining vs 83.0 from scratch (one seed each: within noise).
  camvid    ../shared/data/camvid `train` images (labels unused). Full size: 256 x 256, 21 x 21 tiles, 1000
            steps of batch 32 per stage. `cpu`: quarter-size images (90 x 120) squashed to 64 x 64 views with 8 x 8
            tiles, ResNet-34 U-Net width 0.25, 10 stages of 100 steps of batch 16 (~10 minutes on 2 cores);
            fine-tuning at 80 x 112 crops, 600 steps. Measured (3 seeds, README): selective, random and no
            pretraining are within the seed spread at this budget.
"""

from maskseg_jax.config_base import base_config, parse_arg, refuse
from maskseg_jax.methods.selective_masking.config import STRATEGIES, finetune_defaults, pretrain_defaults

AXES = dict(dataset=("voc", "cityscapes", "folder", "synthetic", "camvid"), stage=("pretrain", "finetune"),
            size=("full", "cpu"), strategy=STRATEGIES)
ARGS = ("", "random", "random_stages", "cityscapes", "cityscapes,random", "folder", "synthetic", "synthetic,random",
        "camvid", "camvid,cpu", "camvid,cpu,random", "camvid,cpu,random_stages", "voc,finetune", "cityscapes,finetune",
        "folder,finetune", "synthetic,finetune", "camvid,finetune", "camvid,finetune,cpu")


def _schedule(c, steps, log, eval_every, checkpoint):
  if steps:
    c.train.steps = steps
  if log:
    c.train.log_every = log
  c.train.eval_every, c.train.checkpoint_every = eval_every, checkpoint


def voc(c, a, pretrain):
  c.data.root, c.data.num_classes = "data/VOC2012", 21
  c.data.crop_size = (256, 256)
  if pretrain:
    c.data.batch_size, c.data.eval_batch_size, c.data.num_workers = 128, 64, 8
    pretrain(steps_per_stage=8000, score_batch_size=128)
    c.optim.warmup_steps = 80
    c.model.dtype = "bfloat16"
    _schedule(c, 0, 100, 2000, 1000)
  else:
    c.data.eval_size, c.data.batch_size, c.data.eval_batch_size = (512, 512), 32, 16
    c.optim.warmup_steps = 200
    _schedule(c, 20000, 0, 2000, 1000)


def cityscapes(c, a, pretrain):
  c.data.root, c.data.num_classes = "data/cityscapes", 19
  c.data.image_scale = 0.25
  if pretrain:
    c.data.crop_size, c.data.batch_size, c.data.eval_batch_size, c.data.num_workers = (256, 512), 128, 64, 8
    pretrain(steps_per_stage=2300, score_batch_size=128)
    c.optim.warmup_steps = 23
    c.model.dtype = "bfloat16"
    _schedule(c, 0, 100, 1150, 500)
  else:
    c.data.crop_size, c.data.eval_size, c.data.batch_size, c.data.eval_batch_size = (256, 256), (256, 512), 32, 16
    c.optim.warmup_steps = 200
    _schedule(c, 20000, 0, 2000, 1000)


def folder(c, a, pretrain):
  c.data.root, c.data.num_classes = "data/weeds", 3
  c.data.crop_size = (256, 256)
  if pretrain:
    c.data.batch_size, c.data.eval_batch_size, c.data.num_workers = 64, 32, 4
    pretrain(steps_per_stage=1000, score_batch_size=64)
    c.optim.warmup_steps = 10
    _schedule(c, 0, 100, 500, 500)
  else:
    c.data.eval_size, c.data.eval_resize = (512, 512), True
    c.data.batch_size, c.data.eval_batch_size = 16, 8
    c.optim.warmup_steps = 100
    _schedule(c, 10000, 0, 1000, 1000)


def synthetic(c, a, pretrain):
  c.data.num_classes = 6
  c.data.crop_size = (64, 64)
  c.data.batch_size = c.data.eval_batch_size = 16
  if pretrain:
    c.data.synthetic.num_train, c.data.synthetic.num_val = 240, 32
    pretrain(num_partitions=3, steps_per_stage=60, grid=8, score_batch_size=16, ms_ssim_weights=(0.3, 0.3, 0.4),
             ms_ssim_window=7)
    c.optim.warmup_steps = 5
    _schedule(c, 0, 20, 60, 60)
  else:
    c.data.eval_size = (64, 64)
    c.optim.warmup_steps = 10
    _schedule(c, 300, 25, 100, 100)
  c.model.backbone, c.model.width = "resnet18", 0.25


def camvid(c, a, pretrain):
  c.data.root = ""  # default: ../shared/data/camvid beside the checkout
  c.data.num_classes = 11
  cpu = a["size"] == "cpu"
  if cpu:
    c.data.image_scale = 0.25
  if pretrain and cpu:
    c.data.crop_size, c.data.batch_size, c.data.eval_batch_size = (64, 64), 16, 16
    pretrain(steps_per_stage=100, grid=8, score_batch_size=32, ms_ssim_weights=(0.3, 0.3, 0.4), ms_ssim_window=7)
    c.optim.warmup_steps = 5
    _schedule(c, 0, 25, 100, 50)
  elif pretrain:
    c.data.crop_size, c.data.batch_size, c.data.eval_batch_size = (256, 256), 32, 32
    pretrain(steps_per_stage=1000, score_batch_size=32)
    c.optim.warmup_steps = 10
    _schedule(c, 0, 100, 500, 500)
  elif cpu:
    c.data.crop_size, c.data.eval_size, c.data.batch_size, c.data.eval_batch_size = (80, 112), (96, 120), 8, 16
    c.optim.warmup_steps = 20
    _schedule(c, 600, 50, 300, 300)
  else:
    c.data.crop_size, c.data.eval_size, c.data.batch_size = (352, 480), (360, 480), 16
    c.optim.warmup_steps = 100
    _schedule(c, 10000, 0, 1000, 1000)
  if cpu:
    c.model.width = 0.25


DATASETS = dict(voc=voc, cityscapes=cityscapes, folder=folder, synthetic=synthetic, camvid=camvid)


def get_config(arg: str | None = None):
  a = parse_arg(arg, "selective", AXES)
  if a["size"] == "cpu" and a["dataset"] != "camvid":
    refuse("selective", arg, "size cpu exists for camvid only (synthetic is CPU-sized already)")
  finetune = a["stage"] == "finetune"
  if finetune and "strategy" in a["given"]:
    refuse("selective", arg, "a masking strategy belongs to pretraining, not to finetune")
  c = base_config()
  c.data.name = a["dataset"]
  pretrain = None
  if finetune:
    finetune_defaults(c)
  else:
    pretrain = lambda **selective: pretrain_defaults(c, strategy=a["strategy"], **selective)  # noqa: E731
  DATASETS[a["dataset"]](c, a, pretrain)
  c.lock()
  return c
