"""Fine-tunes a selective-masking-pretrained U-Net on an images/ + labels/ folder (e.g. the weed sets).

  python -m maskseg_jax.main --config=configs/selective_finetune_folder.py --config.data.root=/data/sugarbeets2016 \
      --config.model.init_from=runs/sel_weeds --workdir=runs/sel_weeds_ft

Nassar 2020 and Sugarbeets 2016 have 3 classes (soil/background, crop, weed), laid out as images/<split>/ and
labels/<split>/ (see selective_folder.py). 256 x 256 crops, whole-image eval at up to 512 x 512 (larger images are
downscaled), cross entropy, Adam 3e-3. `model.init_from` empty = no pretraining. Expect selective > random >
none, most visibly in the weed IoU.
"""

from maskseg_jax.config_base import base_config
from maskseg_jax.methods.selective_config import finetune_defaults


def get_config(arg: str | None = None):
  del arg
  c = base_config()
  c.data.name = "folder"
  c.data.root = "data/weeds"
  c.data.num_classes = 3
  c.data.crop_size = (256, 256)
  c.data.eval_size = (512, 512)
  c.data.eval_resize = True
  c.data.batch_size = 16
  c.data.eval_batch_size = 8
  finetune_defaults(c)
  c.optim.warmup_steps = 100
  c.train.steps = 10000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.lock()
  return c
