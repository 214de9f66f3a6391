"""The config schema shared by every `configs/*.py`.

Each config file calls `base_config()` and overrides what it needs, then returns the locked ConfigDict, so
a misspelt override on the command line (`--config.train.stepz=3`) fails with the key's name instead of
being silently ignored. Method-specific sections (`config.lmae`, `config.semi`, `config.selective`) are added
by the method's configs through `add_section` before locking.
"""

from __future__ import annotations

import os

import ml_collections

from maskseg_jax import configs

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 0..255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "supervised"      # key of maskseg_jax.methods.METHODS
  c.mode = "train"             # train | eval | predict (methods may add more, e.g. lmae: complete)
  c.seed = 0
  c.eval_untrained = False     # True: mode=eval/predict/... may run without a checkpoint (an untrained model)
  c.predict = ml_collections.ConfigDict(dict(
      images="",               # mode=predict: a folder of your own .jpg/.png images ("": the val split)
      out=""))                 # mode=predict: output folder ("": <workdir>/predictions)

  d = c.data = ml_collections.ConfigDict()
  d.name = "synthetic"         # key of maskseg_jax.data.sources.SOURCES
  d.root = ""                  # dataset folder (unused for synthetic)
  d.num_classes = 6
  d.ignore_label = 255
  d.train_split = "train"      # ImageSets name, or a split file listing `image_path label_path` pairs
  d.val_split = "val"
  d.dev_fraction = 0.2         # share of a split that `<split>@dev` holds (`<split>@fit` is the rest)
  d.val_name = ""              # "": val from data.name; else another reader (relabelled train folder, val on camvid)
  d.val_root = ""              # root of val_name's dataset ("": that reader's default, e.g. ../shared/data/camvid)
  d.label_dir = ""             # VOC layout: label folder to use ("": SegmentationClass, else SegmentationClassAug)
  d.tfds_name = "maskseg_folder/camvid"  # data.name=tfds: name returned by data.tfds_builder.prepare_tfds
  d.crop_size = (64, 64)       # (h, w) of training batches
  d.scale_range = (0.5, 2.0)   # random rescale of the training image before the crop
  d.hflip = True
  d.image_scale = 1.0          # fixed resize of every image and label when read (CPU-sized runs use e.g. 0.25)
  d.cache_items = False        # keep decoded (rescaled) items in memory: for splits that fit in RAM
  d.mean = IMAGENET_MEAN
  d.std = IMAGENET_STD
  d.batch_size = 8             # global batch size (over all processes and devices)
  d.eval_batch_size = 8        # global eval batch size
  d.eval_mode = "whole"        # whole | sliding
  d.eval_size = (64, 64)       # whole-image eval pads every image to this (h, w); larger images are an error
  d.eval_resize = False        # True: downscale images larger than eval_size (keeping aspect) instead
  d.eval_window = (64, 64)     # sliding-window eval window (h, w)
  d.eval_stride = (43, 43)     # sliding-window eval stride (h, w)
  d.max_eval_images = -1       # -1: the whole split
  d.validate_items = 64        # decode-check this many items of each split before training (-1: all)
  d.num_workers = 0            # grain worker processes (0: in-process)
  d.read_threads = 2           # grain reader threads per process (0: read in the calling thread)
  d.synthetic = ml_collections.ConfigDict(dict(
      num_train=256, num_val=64, image_size=(64, 64), seed=1234))

  m = c.model = ml_collections.ConfigDict()
  m.name = "deeplabv3plus"     # key of maskseg_jax.models.MODELS
  m.backbone = "resnet50"      # resnet18 | resnet34 | resnet50 | resnet101
  m.width = 1.0                # channel multiplier (tiny test models use e.g. 0.125)
  m.deep_stem = True
  m.output_stride = 16
  m.dropout = 0.1
  m.align_corners = False      # DeepLabV3+ bilinear upsampling grid: False half-pixel, True UniMatch's corners
  m.dtype = "float32"          # compute dtype (bfloat16 on accelerators); parameters stay float32
  m.init_from = ""             # fine-tuning: load weights (all but the output layer) from this run folder

  o = c.optim = ml_collections.ConfigDict()
  o.name = "sgd"               # sgd | adam | adamw
  o.lr = 0.01
  o.momentum = 0.9
  o.weight_decay = 1e-4        # sgd/adam: coupled L2 (added to grads); adamw: decoupled
  o.head_lr_mult = 10.0        # lr multiplier of parameters outside the backbone
  o.schedule = "poly"          # poly | cosine | constant | plateau
  o.poly_power = 0.9
  o.warmup_steps = 0
  o.plateau_factor = 0.8
  o.plateau_patience = 6       # optax counts one earlier than PyTorch: 6 here == PyTorch's 5
  o.plateau_threshold = 1e-3
  o.plateau_accumulation = 1   # steps averaged per plateau check (e.g. steps per epoch)
  o.grad_clip = 0.0            # 0: off

  t = c.train = ml_collections.ConfigDict()
  t.steps = 100
  t.log_every = 10
  t.eval_every = 50
  t.checkpoint_every = 50
  t.keep_checkpoints = 2       # keep the last K, plus the best by `best_metric`
  t.best_metric = "val/miou"
  t.image_every = 0            # write picture grids every N evals (0: only the final eval)
  t.num_images = 4             # samples per picture grid
  t.on_nonfinite = "stop"      # stop | skip
  t.ema_decay = 0.0            # this project's extension: > 0 evaluates/completes with a weight average (weight_average.py)
  t.stop_at = -1               # save and return at this step, as a preemption would (Colab time slices, tests)

  return c


# The canonical setting of each segmenter (spec values); `set_model` applies them so configs stay short.
MODEL_DEFAULTS = {
    "deeplabv3plus": dict(backbone="resnet50", deep_stem=True, output_stride=16, dropout=0.1),
    "unet": dict(backbone="resnet34", deep_stem=False, output_stride=32, dropout=0.2),
    "fcn": dict(backbone="resnet50", deep_stem=False, output_stride=8, dropout=0.1),
}


def set_model(config: ml_collections.ConfigDict, name: str, **overrides) -> None:
  """Selects segmenter `name` with its canonical settings, then applies `overrides` (e.g. width=0.25)."""
  from maskseg_jax.errors import ConfigError
  if name not in MODEL_DEFAULTS:
    raise ConfigError(f"model {name!r} is unknown; expected one of {sorted(MODEL_DEFAULTS)}")
  config.model.name = name
  config.model.update({**MODEL_DEFAULTS[name], **overrides})


def parse_arg(arg: str | None, family: str, axes: dict, number: str = "") -> dict:
  """A config file's `arg` -> its choices: `'camvid,cpu,unimatch'` -> `{'dataset': 'camvid', 'size': 'cpu', ...}`.

  Each comma-separated token is a value of the one axis that lists it (values are unique across axes; the
  first value of an axis is its default); a number, when `number` names it, fills that field (else None).
  `given` is the set of axes the arg set. An unknown or repeated token raises a ConfigError naming it and
  every accepted value.
  """
  from maskseg_jax.errors import ConfigError
  picked = {}
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    axis = next((a for a, values in axes.items() if token in values), None)
    value = token
    if axis is None and number:
      try:
        value, axis = float(token), number
      except ValueError:
        pass
    if axis is None:
      accepted = "; ".join(f"{a}: {'|'.join(v)}" for a, v in axes.items()) + (f"; {number}: a number" if number else "")
      raise ConfigError(f"configs/{family}.py arg {arg!r}: {token!r} is not an accepted value ({accepted})")
    if axis in picked:
      raise ConfigError(f"configs/{family}.py arg {arg!r}: two {axis} values, {picked[axis]!r} and {value!r}")
    picked[axis] = value
  out = {a: picked.get(a, values[0]) for a, values in axes.items()}
  if number:
    out[number] = picked.get(number)
  out["given"] = set(picked)
  return out


# The selection protocol, a config-arg axis: `dev` trains on `train@fit` and evaluates on `train@dev` (where every
# choice is made); `fit` trains on the same images and evaluates on `val` (reported, never selected on).
PROTOCOLS = {"train": ("train", "val"), "dev": ("train@fit", "train@dev"), "fit": ("train@fit", "val")}


def apply_protocol(config: ml_collections.ConfigDict, protocol: str) -> None:
  """Sets data.train_split / data.val_split for a protocol of `PROTOCOLS` (the `train` default keeps them)."""
  if protocol != "train":
    config.data.train_split, config.data.val_split = PROTOCOLS[protocol]


def refuse(family: str, arg: str | None, what: str) -> None:
  """Raises the ConfigError of a combination a family's config does not define (`what` says which)."""
  from maskseg_jax.errors import ConfigError
  raise ConfigError(f"configs/{family}.py arg {arg!r}: {what}")


def add_section(config: ml_collections.ConfigDict, name: str, **values) -> ml_collections.ConfigDict:
  """Adds a method-specific section, e.g. `add_section(c, 'lmae', mask_ratio=0.5)`."""
  config[name] = ml_collections.ConfigDict(values)
  return config[name]


CONFIGS_DIR = configs.DIR  # the packaged config files


def load_config(name: str, arg: str | None = None, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """A config file's `get_config(arg)` (a packaged name, `name.py`, or a path), dotted overrides applied, locked.

  For scripts and tests that build configs in Python; the command line does the same through config_flags.
  """
  import importlib.util
  path = name if os.sep in name else os.path.join(CONFIGS_DIR, name if name.endswith(".py") else f"{name}.py")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(arg), overrides)


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict | None) -> ml_collections.ConfigDict:
  """`config` with dotted `{"train.steps": 10}` values set (a misspelt key raises), locked again."""
  config.unlock()
  for key, value in (overrides or {}).items():
    node = config
    *parents, last = key.split(".")
    for parent in parents:
      node = node[parent]
    node[last] = value
  config.lock()
  return config
