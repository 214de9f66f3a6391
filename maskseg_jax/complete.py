"""Label completion with trained L-MAE models: a folder of images + incomplete labels -> completed labels.

  maskseg-complete --images=DIR --labels=DIR --out=NEW_DIR --model=RUN_DIR [--model=0.7=RUN_DIR2 ...]

Each (image, label) pair goes to the model with the smallest mask ratio >= the label's background proportion
(background classes, void and unknown pixels), the largest otherwise. Pixels marked unknown (`lmae.unknown_value`,
default 254) are always masked; Background-First fills the rest of the masked budget. If the unknown patches
exceed every model's budget the highest-ratio model runs several passes (and says so, naming the file). Labels
of any size are mapped to the model input and back by nearest neighbour; only background, void and unknown
pixels inside masked patches are replaced, so every given (foreground) pixel is kept exactly. Palette PNGs
are written back with their palette; nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from maskseg_jax import checkpointing, optim
from maskseg_jax import lmae_inference as inf
from maskseg_jax.data import sources
from maskseg_jax.data import transforms as T
from maskseg_jax.errors import CheckpointError, ConfigError, DataError, MasksegError
from maskseg_jax.masking import patches as P
from maskseg_jax.methods import base
from maskseg_jax.models.lmae import build_lmae


@dataclasses.dataclass
class Completer:
  """One trained L-MAE, ready to run Background-First completion at its mask ratio."""
  name: str
  ratio: float
  num_classes: int
  patch_size: int
  image_size: tuple[int, int]
  background_classes: tuple[int, ...]
  ignore_label: int
  unknown_value: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  predict: Callable  # (image f32[1,h,w,3], label i32[1,h,w], force bool[1,L]) -> (pred i32[1,h,w], mask bool[1,L])

  @property
  def num_patches(self) -> int:
    return (self.image_size[0] // self.patch_size) * (self.image_size[1] // self.patch_size)

  @property
  def budget(self) -> int:
    """Patches masked (and so predicted) in one pass."""
    return self.num_patches - P.num_visible(self.num_patches, self.ratio)


@dataclasses.dataclass
class FileReport:
  name: str
  out_path: str
  changed_pixels: int
  ratio: float              # mask ratio of the model used
  background_proportion: float
  passes: int               # > 1 only when unknown patches exceeded every model's budget


def make_completer(config, mdef, params, batch_stats, *, name: str, ratio: float | None = None) -> Completer:
  """Wraps a model (split as `mdef`, params, batch_stats) and its run config into a Completer."""
  lc, dc = config.lmae, config.data
  ratio = float(lc.mask_ratio if ratio is None else ratio)
  p, h, w, num_patches = inf.geometry(config.model)
  k = P.num_visible(num_patches, ratio)
  bg = tuple(int(c) for c in lc.background_classes)
  ignore = int(dc.ignore_label)
  key = jax.random.PRNGKey(int(lc.eval_seed))

  @jax.jit
  def predict(params, batch_stats, image, label, force):
    ids_keep, ids_masked, mask = inf.strategy_mask(label, key, strategy="background_first", k=k, p=p,
                                                   background_classes=bg, ignore_label=ignore, force=force)
    logits = mdef.merge(params, batch_stats)(image, label, ids_keep, ids_masked, train=False)
    return jnp.argmax(logits, -1).astype(jnp.int32), mask

  return Completer(name=name, ratio=ratio, num_classes=int(dc.num_classes), patch_size=p, image_size=(h, w),
                   background_classes=bg, ignore_label=ignore, unknown_value=int(lc.unknown_value),
                   mean=tuple(dc.mean), std=tuple(dc.std),
                   predict=lambda *a: predict(params, batch_stats, *a))


# --- loading trained runs ---------------------------------------------------------------------------------
def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path} not found; expected the workdir of an L-MAE training run "
                          "(python -m maskseg_jax.main --config=configs/lmae_*.py --workdir=...)")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.get("method") != "lmae":
    raise ConfigError(f"{path} is a {config.get('method')!r} run; completion needs an 'lmae' run")
  return config


def best_step(workdir: str, metric: str, available: Sequence[int]) -> int | None:
  """The saved step with the highest `metric` in `metrics.jsonl` (None if no eval of a saved step)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  scores = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if row.get("split") == "eval" and metric in row and row["step"] in available:
        scores[row["step"]] = row[metric]
  return max(scores, key=scores.get) if scores else None


def load_completer(workdir: str, *, ratio: float | None = None, checkpoint: str = "latest") -> Completer:
  """Rebuilds the model from `<workdir>/config.json` and restores its latest (or best) checkpoint."""
  if checkpoint not in ("latest", "best"):
    raise ConfigError(f"checkpoint={checkpoint!r}; expected 'latest' or 'best'")
  config = read_run_config(workdir)
  n = int(config.data.num_classes)
  mdef, params, batch_stats = base.split_model(
      build_lmae(config.model, n, nnx.Rngs(params=config.seed, dropout=config.seed + 1)))
  tx = optim.make_optimizer(config.optim, config.train.steps, params)
  # The optimizer state is only described (never allocated): restoring needs the saved tree's structure.
  shapes = jax.eval_shape(lambda p: base.new_state(p, batch_stats, tx, {"class_weights": jnp.zeros(n)}), params)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    step = ckpt.latest_step()
    if checkpoint == "best" and step is not None:
      step = best_step(workdir, config.train.best_metric, ckpt.all_steps()) or step
    restored, _ = ckpt.restore(abstract, step=step)
  finally:
    ckpt.close()
  return make_completer(config, mdef, restored["params"], restored["batch_stats"], name=workdir, ratio=ratio)


def parse_model_spec(spec) -> tuple[float | None, str]:
  """'WORKDIR' or 'RATIO=WORKDIR' (or a (ratio, workdir) pair) -> (ratio or None, workdir)."""
  if isinstance(spec, (tuple, list)):
    return (None if spec[0] is None else float(spec[0])), str(spec[1])
  head, sep, tail = str(spec).partition("=")
  if sep:
    try:
      return float(head), tail
    except ValueError:
      pass
  return None, str(spec)


# --- routing and one pair ---------------------------------------------------------------------------------
def route(completers: Sequence[Completer], background: float, forced: Sequence[int]) -> tuple[int, bool]:
  """(index of the model to use, whether unknown patches exceed every budget).

  Models whose budget holds the forced (unknown) patches are eligible; among them the smallest ratio >= the
  background proportion, else the largest. If none is eligible: the largest ratio.
  """
  order = sorted(range(len(completers)), key=lambda i: completers[i].ratio)
  eligible = [i for i in order if forced[i] <= completers[i].budget]
  if not eligible:
    return order[-1], True
  above = [i for i in eligible if completers[i].ratio >= background - 1e-9]
  return (above[0] if above else eligible[-1]), False


def complete_label(completers: Sequence[Completer], image: np.ndarray, label: np.ndarray, *, name: str = "",
                   unknown_value: int | None = None, log: Callable[[str], None] = print):
  """Completes one uint8 label [H,W] given its uint8 image [H,W,3] -> (completed label, FileReport fields)."""
  first = completers[0]
  unknown_value = first.unknown_value if unknown_value is None else int(unknown_value)
  n, bg, ignore = first.num_classes, first.background_classes, first.ignore_label
  bad = (label >= n) & (label != ignore) & (label != unknown_value)
  if bad.any():
    raise DataError(f"label {name} has values {np.unique(label[bad])[:10].tolist()}; expected class ids "
                    f"0..{n - 1}, {ignore} (void) or {unknown_value} (unknown)")
  given = inf.given_pixels(label, n, bg)
  background = float(1.0 - given.mean())
  hw = label.shape
  patch_maps = [inf.model_patch_of_pixels(hw, c.image_size, c.patch_size) for c in completers]
  unknown = label == unknown_value
  forced = [int(inf.patches_with(unknown, pm, c.num_patches).sum()) for c, pm in zip(completers, patch_maps)]
  index, over = route(completers, background, forced)
  c, patch_of = completers[index], patch_maps[index]
  if over:
    log(f"warning: {name}: unknown pixels cover {forced[index]} patches, more than the {c.budget} any model "
        f"masks at once; completing them in several passes of the ratio-{c.ratio} model")
  image_m, _ = T.resize(image, None, c.image_size)
  image_m = T.normalize(image_m, c.mean, c.std)[None]
  current, passes = label.copy(), 0
  while passes == 0 or (current == unknown_value).any():
    missing = current == unknown_value
    force = inf.patches_with(missing, patch_of, c.num_patches)
    label_m = inf.resize_nearest(np.where(missing, ignore, current), c.image_size).astype(np.int32)
    pred, mask = jax.device_get(c.predict(image_m, label_m[None], force[None]))
    masked = np.asarray(mask[0])[patch_of]  # each original pixel's model patch
    region = masked & ~given if passes == 0 else masked & missing
    current = inf.compose(current, inf.resize_nearest(np.asarray(pred[0], np.uint8), hw), region)
    passes += 1
    if passes > c.num_patches:  # cannot happen: every pass masks at least one unknown patch
      raise RuntimeError(f"completion of {name} did not converge")
  assert np.array_equal(current[given], label[given]), f"{name}: a given pixel changed"
  return current, dict(changed_pixels=int((current != label).sum()), ratio=c.ratio,
                       background_proportion=background, passes=passes)


# --- folders ----------------------------------------------------------------------------------------------
def _stem(f: str) -> str:
  return os.path.splitext(f)[0]


def pair_files(images_dir: str, labels_dir: str) -> list[tuple[str, str, str]]:
  """(image path, label path, stem) for every image; DataError naming any image without a label or vice versa."""
  for what, d in (("images", images_dir), ("labels", labels_dir)):
    if not os.path.isdir(d):
      raise DataError(f"{what} folder {d} not found")
  images = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(sources.IMAGE_EXTS))
  labels = {_stem(f): f for f in os.listdir(labels_dir) if f.lower().endswith(".png")}
  stems = [_stem(f) for f in images]
  dup = sorted({s for s in stems if stems.count(s) > 1})
  if dup:
    raise DataError(f"{images_dir} has several images named {dup[0]}.* ; expected one image per stem")
  for f in images:
    if _stem(f) not in labels:
      raise DataError(f"image {os.path.join(images_dir, f)} has no label {_stem(f)}.png in {labels_dir}")
  orphans = sorted(set(labels) - set(stems))
  if orphans:
    raise DataError(f"label {os.path.join(labels_dir, labels[orphans[0]])} has no image in {images_dir} "
                    f"({len(orphans)} labels without an image)")
  if not images:
    raise DataError(f"{images_dir} holds no .jpg/.jpeg/.png image")
  return [(os.path.join(images_dir, f), os.path.join(labels_dir, labels[_stem(f)]), _stem(f)) for f in images]


def read_label_png(path: str) -> tuple[np.ndarray, list[int] | None, dict]:
  """(uint8 ids, palette or None, PNG info to keep such as transparency)."""
  label = sources.read_label(path)
  with Image.open(path) as im:
    palette = im.getpalette() if im.mode == "P" else None
    info = {k: im.info[k] for k in ("transparency",) if k in im.info}
  return label, palette, info


def write_label_png(path: str, label: np.ndarray, palette: list[int] | None, info: dict) -> None:
  """Writes ids as a palette PNG with `palette` (as read) or as grayscale."""
  label = np.ascontiguousarray(label, np.uint8)
  if palette is not None:
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    im.putpalette(palette)
  else:
    im = Image.fromarray(label)
  im.save(path, **info)


def _same(a: str, b: str) -> bool:
  return os.path.realpath(a) == os.path.realpath(b)


def complete_folder(images_dir: str, labels_dir: str, out_dir: str, models: Sequence, *,
                    checkpoint: str = "latest", unknown_value: int | None = None,
                    log: Callable[[str], None] = print) -> list[FileReport]:
  """Completes every label of `labels_dir` into the new folder `out_dir`; returns one report per file.

  models: Completers, or trained workdirs as 'WORKDIR', 'RATIO=WORKDIR' or (ratio, workdir) pairs.
  Nothing is written unless every output name is free, and `out_dir` may not be an input folder.
  """
  if not models:
    raise ConfigError("no L-MAE model given; pass at least one trained workdir")
  if _same(out_dir, labels_dir) or _same(out_dir, images_dir):
    raise DataError(f"output folder {out_dir} is an input folder; expected a new folder (inputs are never "
                    "overwritten)")
  pairs = pair_files(images_dir, labels_dir)
  outputs = [os.path.join(out_dir, os.path.basename(lp)) for _, lp, _ in pairs]
  for path in outputs:
    if os.path.exists(path):
      raise DataError(f"output file {path} already exists; refusing to overwrite it (choose a new output "
                      "folder)")
  completers = [m if isinstance(m, Completer) else load_completer(parse_model_spec(m)[1],
                                                                   ratio=parse_model_spec(m)[0],
                                                                   checkpoint=checkpoint) for m in models]
  os.makedirs(out_dir, exist_ok=True)
  # Outputs go to a scratch folder first and move into place only when every pair succeeded, so a bad pair
  # met halfway leaves no partial result behind (and a rerun into the same folder is not refused).
  staging = tempfile.mkdtemp(prefix=".maskseg_partial_", dir=out_dir)
  reports = []
  try:
    for (image_path, label_path, stem), out_path in zip(pairs, outputs):
      image = sources.read_image(image_path)
      label, palette, info = read_label_png(label_path)
      if label.shape != image.shape[:2]:
        raise DataError(f"label {label_path} is {label.shape[0]}x{label.shape[1]} but image {image_path} is "
                        f"{image.shape[0]}x{image.shape[1]}; expected the same size")
      out, fields = complete_label(completers, image, label, name=label_path, unknown_value=unknown_value,
                                   log=log)
      write_label_png(os.path.join(staging, os.path.basename(out_path)), out, palette, info)
      report = FileReport(name=os.path.basename(label_path), out_path=out_path, **fields)
      log(f"{report.name}: {report.changed_pixels} pixels changed (mask ratio {report.ratio}, background "
          f"{report.background_proportion:.2f}{f', {report.passes} passes' if report.passes > 1 else ''})")
      reports.append(report)
    for report in reports:
      os.replace(os.path.join(staging, os.path.basename(report.out_path)), report.out_path)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  log(f"wrote {len(reports)} completed labels to {out_dir}")
  return reports


def complete_from_config(config, mdef, state) -> dict:
  """`config.mode=complete`: this run's model (plus `lmae.complete_models`) on the `lmae.complete_*` folders."""
  lc = config.lmae
  missing = [f"lmae.{k}" for k in ("complete_images", "complete_labels", "complete_out") if not lc[k]]
  if missing:
    raise ConfigError(f"config.mode=complete needs {', '.join(missing)} (folders of images, labels and a new "
                      "output folder)")
  if jax.process_count() > 1:
    raise ConfigError("config.mode=complete runs in one process (every process would write the same files); "
                      "use maskseg-complete --model=<workdir> on one host")
  own = make_completer(config, mdef, state["params"], state["batch_stats"], name="this run")
  reports = complete_folder(lc.complete_images, lc.complete_labels, lc.complete_out,
                            [own, *lc.complete_models], checkpoint=lc.complete_checkpoint)
  return {"complete/files": float(len(reports)),
          "complete/changed_pixels": float(sum(r.changed_pixels for r in reports))}


def run_main(argv: Sequence[str] | None = None) -> None:
  """Console script `maskseg-complete`; bad input prints `error: ...` and exits 2."""
  ap = argparse.ArgumentParser(prog="maskseg-complete", description=__doc__.split("\n")[0])
  ap.add_argument("--images", required=True, help="folder of images (.jpg/.jpeg/.png)")
  ap.add_argument("--labels", required=True, help="folder of <image stem>.png labels (palette or grayscale)")
  ap.add_argument("--out", required=True, help="new folder for the completed labels")
  ap.add_argument("--model", action="append", required=True,
                  help="trained L-MAE workdir, optionally RATIO=WORKDIR (default ratio: its lmae.mask_ratio); "
                       "repeat for several ratios")
  ap.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
  ap.add_argument("--unknown_value", type=int, default=None, help="label value of pixels to fill (default: "
                  "the model's lmae.unknown_value, 254)")
  args = ap.parse_args(argv)
  try:
    reports = complete_folder(args.images, args.labels, args.out, args.model, checkpoint=args.checkpoint,
                              unknown_value=args.unknown_value)
  except MasksegError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps({"files": len(reports), "changed_pixels": sum(r.changed_pixels for r in reports)}))


if __name__ == "__main__":
  run_main()
