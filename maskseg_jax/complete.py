"""Label completion: a folder of images + incomplete labels -> completed labels, by L-MAE or a non-learned fill.

  maskseg-complete --images=DIR --labels=DIR --out=NEW_DIR --model=RUN_DIR [--model=0.7=RUN_DIR2 ...]
      [--method=model|hybrid|nearest|geodesic] [--hybrid_radius=PX] [--missing=unknown_and_void|unknown|paper] [--scale=train|fit]

Which pixels are given (`--missing`; the unknown marker is `--unknown_value`, default the run's
`lmae.unknown_value` = 254; void is `data.ignore_label` = 255):
  unknown_and_void  (default) unknown and void pixels are filled; every class pixel (background classes too)
                    is given and kept exactly.
  unknown           only unknown pixels are filled; void pixels are given and kept as void.
  paper             the paper's protocol for labels whose missing objects were set to background: unknown,
                    void and background-class pixels may be replaced, inside the patches a Background-First mask
                    at the routed model's ratio hides (unknown patches first); foreground pixels are given.
With `--unknown_value=255` void itself is the unknown marker (filled in every mode). A class id as the unknown
value is refused. Given pixels are never changed (checked for every file; a violation raises, even under -O).

`--method=model` (default; needs --model): in `unknown*` modes exactly the patches that hold a missing pixel
(after the nearest-neighbour resize of the label to the model input) are masked, so every given label outside
them reaches the model; the count is rounded up to one of a few static buckets (`lmae_inference.BUCKET_FRACTIONS`
of L, plus each model's training budget) so the jitted model compiles once per bucket, the extra masked patches
chosen Background-First (their pixels are not written). `--scale=train` (default) cuts the file into the fewest
evenly overlapping tiles of the field of view the run was trained on (`data.crop_size / data.image_scale` file
pixels, resized to `model.image_size`; a side within 10% of it is one tile, a shorter one is padded as training
pads); `fit` resizes the whole file to the model input. At model resolution the logits are composed before any
resize (`lmae_inference.given_logits`): the model's at pixels of masked patches; at visible pixels, whose model
logits a masked-loss model never learnt, a one-hot logit of the given class at the 99.9% softmax level, or 0
(no vote) where the visible label is no class (void given under `--missing=unknown`, tile padding). These are
bilinearly resized to file pixels, so a missing pixel next to the hole's rim leans to the given classes there;
they are blended (a tent weight) over the tiles whose mask covers the pixel, and the argmax fills the missing
pixels at the file's resolution.
Several models: each file goes to the model with the smallest ratio >= the fraction of patches it needs masked
(`paper`: >= its background proportion), the largest otherwise; one warning line lists the files that needed
more masking than the chosen model was trained at. `RATIO=RUN` routes a run as RATIO (warned if it was trained
at another ratio); two models at one ratio are refused.
`--method=hybrid` (this project's extension; needs --model): missing pixels within `--hybrid_radius` file pixels
(default half a model patch) of a given class pixel take the geodesic fill, the others the model's completion:
the fill wins on scattered holes and thin gaps, the model on large holes and whole missing objects.
`--method=nearest|geodesic` (`maskseg_jax.fills`, no model): the unknown pixels take the label of the nearest
(Euclidean / colour-geodesic) given class pixel, so a user can compare fills and the model on their own folder.

Files: palette PNGs are written back with their palette, grayscale as grayscale; nothing is ever overwritten;
the output folder may not be, or lie inside, an input folder. Outputs are staged in a hidden
`.maskseg_partial_<pid>_*` folder and moved into place only when every pair succeeded; SIGTERM and Ctrl-C remove
it (exit 143 / 130, nothing written), and a later run into the same folder removes partial folders left by a
killed run (its process no longer alive). Bad input: one `error: ...` line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from maskseg_jax import checkpointing, fills, optim
from maskseg_jax import lmae_inference as inf
from maskseg_jax.data import sources
from maskseg_jax.data import transforms as T
from maskseg_jax.errors import CheckpointError, ConfigError, DataError, MasksegError
from maskseg_jax.masking import patches as P
from maskseg_jax.methods import base
from maskseg_jax.models.lmae import build_lmae

DEFAULT_UNKNOWN = 254
DEFAULT_IGNORE = 255
PARTIAL_PREFIX = ".maskseg_partial_"


# --- label codes and which pixels are missing ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Codes:
  """What the values of a label mean. num_classes None (fills without a model): every other value is a class."""
  num_classes: int | None
  background_classes: tuple[int, ...] = ()
  ignore_label: int = DEFAULT_IGNORE
  unknown_value: int = DEFAULT_UNKNOWN

  def classes(self, label: np.ndarray) -> np.ndarray:
    """bool[H,W]: pixels holding a class id."""
    if self.num_classes is None:
      return (label != self.ignore_label) & (label != self.unknown_value)
    return (label < self.num_classes) & (label != self.unknown_value)

  def background(self, label: np.ndarray) -> np.ndarray:
    return np.isin(label, self.background_classes) & self.classes(label)


def check_codes(codes: Codes) -> None:
  """The unknown marker must be a label value that is not a class id."""
  u, n = codes.unknown_value, codes.num_classes
  if not 0 <= u <= 255:
    raise ConfigError(f"unknown_value={u} is not an 8-bit label value; expected 0..255 outside the class ids "
                      f"(default {DEFAULT_UNKNOWN})")
  if n is not None and u < n:
    raise ConfigError(f"unknown_value={u} is class id {u} of the model's 0..{n - 1}; expected a value that is "
                      f"no class, e.g. --unknown_value={DEFAULT_UNKNOWN}")


def check_values(label: np.ndarray, codes: Codes, name: str) -> None:
  """DataError naming the file if a value is neither a class, void nor unknown."""
  if codes.num_classes is None:
    return
  bad = (label >= codes.num_classes) & (label != codes.ignore_label) & (label != codes.unknown_value)
  if not bad.any():
    return
  n, ignore, u = codes.num_classes, codes.ignore_label, codes.unknown_value
  if u == ignore:
    allowed = f"{ignore} (void, which --unknown_value={u} also makes the unknown marker)"
  else:
    allowed = f"{ignore} (void) or {u} (unknown)"
  hint = (f"; if {DEFAULT_UNKNOWN} marks unknown pixels, pass --unknown_value={DEFAULT_UNKNOWN}"
          if DEFAULT_UNKNOWN in np.unique(label[bad]) and u != DEFAULT_UNKNOWN else "")
  raise DataError(f"label {name} has values {np.unique(label[bad])[:10].tolist()}; expected class ids "
                  f"0..{n - 1}, {allowed}{hint}")


@dataclasses.dataclass(frozen=True)
class Missing:
  """One `--missing` choice: which pixels may be replaced, which force their patch masked, and whether the
  mask is exactly the forced patches (True) or Background-First up to the model's training budget (paper)."""
  fillable: Callable[[np.ndarray, Codes], np.ndarray]
  forced: Callable[[np.ndarray, Codes], np.ndarray]
  exact: bool


def _unknown(label, codes):
  return label == codes.unknown_value


def _unknown_or_void(label, codes):
  return (label == codes.unknown_value) | (label == codes.ignore_label)


def _not_foreground(label, codes):
  return ~codes.classes(label) | codes.background(label)


MISSING: dict[str, Missing] = {
    "unknown_and_void": Missing(fillable=_unknown_or_void, forced=_unknown_or_void, exact=True),
    "unknown": Missing(fillable=_unknown, forced=_unknown, exact=True),
    "paper": Missing(fillable=_not_foreground, forced=_unknown, exact=False),
}
DEFAULT_MISSING = "unknown_and_void"


# --- a trained model, ready to complete ---------------------------------------------------------------------
@dataclasses.dataclass
class Completer:
  """One trained L-MAE: its geometry, label codes, training field of view and a jitted logits function."""
  name: str
  ratio: float              # the ratio it is routed as (RATIO=RUN, else its training ratio)
  train_ratio: float        # lmae.mask_ratio it was trained at
  num_classes: int
  patch_size: int
  image_size: tuple[int, int]
  background_classes: tuple[int, ...]
  ignore_label: int
  unknown_value: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  window: tuple[int, int]   # file pixels one model input covers in training: data.crop_size / data.image_scale
  # (image f32[1,h,w,3], label i32[1,h,w], force bool[1,L], k static) -> (logits f32[1,h,w,N], mask bool[1,L])
  logits: Callable
  traces: list = dataclasses.field(default_factory=list)  # visible counts k compiled for (one per bucket)

  @property
  def num_patches(self) -> int:
    return (self.image_size[0] // self.patch_size) * (self.image_size[1] // self.patch_size)

  @property
  def budget(self) -> int:
    """Patches its training masked (the paper protocol masks this many)."""
    return self.num_patches - P.num_visible(self.num_patches, self.train_ratio)

  @functools.cached_property
  def buckets(self) -> tuple[int, ...]:
    return inf.mask_buckets(self.num_patches, (self.budget,))

  def codes(self, unknown_value: int | None = None) -> Codes:
    return Codes(self.num_classes, self.background_classes, self.ignore_label,
                 self.unknown_value if unknown_value is None else int(unknown_value))


def train_window(data_config, image_size) -> tuple[int, int]:
  """The field of view of one training input in file pixels: a `crop_size` crop of the image resized by
  `image_scale` (training then resizes the crop to `model.image_size`)."""
  scale = float(data_config.get("image_scale", 1.0))
  crop = data_config.get("crop_size", None) or image_size
  crop = (crop, crop) if isinstance(crop, int) else crop
  return tuple(max(1, int(round(int(c) / scale))) for c in crop)


def make_completer(config, mdef, params, batch_stats, *, name: str, ratio: float | None = None) -> Completer:
  """Wraps a model (split as `mdef`, params, batch_stats) and its run config into a Completer."""
  lc, dc = config.lmae, config.data
  train_ratio = float(lc.mask_ratio)
  p, h, w, _ = inf.geometry(config.model)
  bg = tuple(int(c) for c in lc.background_classes)
  ignore = int(dc.ignore_label)
  key = jax.random.PRNGKey(int(lc.get("eval_seed", 0)))
  traces: list = []

  @functools.partial(jax.jit, static_argnames="k")
  def run(params, batch_stats, image, label, force, *, k):
    traces.append(k)  # runs once per compile
    ids_keep, ids_masked, mask = inf.strategy_mask(label, key, strategy="background_first", k=k, p=p,
                                                   background_classes=bg, ignore_label=ignore, force=force)
    logits = mdef.merge(params, batch_stats)(image, label, ids_keep, ids_masked, train=False)
    return logits.astype(jnp.float32), mask

  return Completer(name=name, ratio=train_ratio if ratio is None else float(ratio), train_ratio=train_ratio,
                   num_classes=int(dc.num_classes), patch_size=p, image_size=(h, w), background_classes=bg,
                   ignore_label=ignore, unknown_value=int(lc.get("unknown_value", DEFAULT_UNKNOWN)),
                   mean=tuple(dc.mean), std=tuple(dc.std), window=train_window(dc, (h, w)),
                   logits=lambda image, label, force, k: run(params, batch_stats, image, label, force, k=k),
                   traces=traces)


# --- loading trained runs -----------------------------------------------------------------------------------
# Fields of a run's config.json completion reads (besides what build_lmae and the optimizer read).
RUN_FIELDS = ("seed", "data.num_classes", "data.ignore_label", "data.mean", "data.std", "model.patch_size",
              "model.image_size", "optim", "train.steps", "lmae.mask_ratio", "lmae.background_classes")


def _lookup(tree, dotted: str):
  node = tree
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      raise KeyError(dotted)
    node = node[part]
  return node


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, or a ConfigError naming config.json and what is wrong with it."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path} not found; expected the workdir of an L-MAE training run "
                          "(python -m maskseg_jax.main --config=configs/lmae_*.py --workdir=...)")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    data = json.loads(text)
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path} could not be read ({e}); expected the JSON config its training run wrote") from None
  except json.JSONDecodeError as e:
    cut = "" if text.rstrip().endswith("}") else " (empty or cut short: was its training start interrupted?)"
    raise ConfigError(f"{path} is not valid JSON ({e}){cut}; expected the config its training run wrote "
                      "(restore it, or start the run again)") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path} holds a JSON {type(data).__name__}; expected an object (the run's config)")
  if data.get("method") != "lmae":
    raise ConfigError(f"{path} is a {data.get('method')!r} run; completion needs an 'lmae' run")
  for field in RUN_FIELDS:
    try:
      _lookup(data, field)
    except KeyError:
      raise ConfigError(f"{path} lacks {field}; expected the full config an L-MAE training run writes") from None
  return ml_collections.ConfigDict(data)


def best_step(workdir: str, metric: str, available: Sequence[int]) -> int | None:
  """The saved step with the highest `metric` in `metrics.jsonl` (None if no eval of a saved step)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  scores = {}
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by an interrupted run
      if row.get("split") == "eval" and metric in row and row["step"] in available:
        scores[row["step"]] = row[metric]
  return max(scores, key=scores.get) if scores else None


def load_completer(workdir: str, *, ratio: float | None = None, checkpoint: str = "latest",
                   log: Callable[[str], None] = print) -> Completer:
  """Rebuilds the model from `<workdir>/config.json` (via build_lmae) and restores its latest or best step."""
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
  c = make_completer(config, mdef, restored["params"], restored["batch_stats"], name=workdir, ratio=ratio)
  if abs(c.ratio - c.train_ratio) > 1e-9:
    log(f"warning: --model={c.ratio:g}={workdir}: this run was trained at mask ratio {c.train_ratio:g}, not "
        f"{c.ratio:g}; it is routed as {c.ratio:g}")
  return c


def parse_model_spec(spec) -> tuple[float | None, str]:
  """'WORKDIR' or 'RATIO=WORKDIR' (or a (ratio, workdir) pair) -> (ratio or None, workdir); ratio in (0, 1)."""
  if isinstance(spec, (tuple, list)):
    ratio, workdir = (None if spec[0] is None else float(spec[0])), str(spec[1])
  else:
    head, sep, tail = str(spec).partition("=")
    ratio, workdir = None, str(spec)
    if sep:
      try:
        ratio, workdir = float(head), tail
      except ValueError:
        pass
  if ratio is not None and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
    raise ConfigError(f"--model={spec if isinstance(spec, str) else f'{spec[0]}={spec[1]}'}: mask ratio "
                      f"{ratio:g} is out of range; expected a number in (0, 1), e.g. --model=0.5={workdir}")
  if not workdir:
    raise ConfigError(f"--model={spec}: no run folder; expected RUN or RATIO=RUN")
  return ratio, workdir


def check_ratios(completers: Sequence[Completer]) -> None:
  """Refuses two models routed at one ratio (which would win is arbitrary)."""
  seen: dict[float, str] = {}
  for c in completers:
    key = round(c.ratio, 9)
    if key in seen:
      raise ConfigError(f"two models at mask ratio {c.ratio:g} ({seen[key]} and {c.name}); expected one model "
                        "per ratio (route one as another ratio with --model=RATIO=RUN, or drop it)")
    seen[key] = c.name


def route(ratios: Sequence[float], needs: Sequence[float]) -> int:
  """Index of the smallest ratio >= its model's need (masked fraction or background proportion), else the
  largest ratio."""
  order = sorted(range(len(ratios)), key=lambda i: ratios[i])
  above = [i for i in order if ratios[i] >= needs[i] - 1e-9]
  return above[0] if above else order[-1]


# --- one file -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tile:
  """A window of the file: rows y0:y0+h, cols x0:x0+w, padded to (ph, pw) before resizing to the model input."""
  y0: int
  x0: int
  h: int
  w: int
  ph: int
  pw: int
  force: np.ndarray  # bool[L]: model patches holding a forced pixel


SCALES: dict[str, Callable[[Completer, tuple[int, int]], tuple[int, int]]] = {
    "train": lambda c, hw: c.window,   # the field of view it was trained on
    "fit": lambda c, hw: hw,           # the whole file in one model input
}


def plan_tiles(c: Completer, forced_px: np.ndarray, scale: str) -> list[Tile]:
  """The tiles of a file for model `c`, each with the patches its forced pixels make masked."""
  hw = forced_px.shape
  window = SCALES[scale](c, hw)
  (ys, th), (xs, tw) = (inf.tile_starts(hw[i], window[i]) for i in (0, 1))
  ph, pw = max(th, window[0]), max(tw, window[1])
  patch_of = inf.model_patch_of_pixels((ph, pw), c.image_size, c.patch_size)
  tiles = []
  for y0 in ys:
    for x0 in xs:
      px = np.zeros((ph, pw), bool)
      px[:th, :tw] = forced_px[y0:y0 + th, x0:x0 + tw]
      tiles.append(Tile(y0, x0, th, tw, ph, pw, inf.patches_with(px, patch_of, c.num_patches)))
  return tiles


def _pad(x: np.ndarray, ph: int, pw: int, value) -> np.ndarray:
  pads = ((0, ph - x.shape[0]), (0, pw - x.shape[1])) + ((0, 0),) * (x.ndim - 2)
  return np.pad(x, pads, constant_values=value)


def model_logits(c: Completer, image: np.ndarray, fed: np.ndarray, tiles: Sequence[Tile], min_masked: int):
  """(blended logits f32[H,W,N], weight f32[H,W], largest masked count) over `tiles`.

  Each tile's logits are composed at model resolution (`inf.given_logits`: the model's on masked patches, the
  given labels elsewhere) and then resized, and count only at file pixels of its masked patches (the pixels it
  may fill); tiles that force nothing are skipped when nothing else must be masked.
  """
  hw = fed.shape
  acc = np.zeros(hw + (c.num_classes,), np.float32)
  weight = np.zeros(hw, np.float32)
  top = 0
  for t in tiles:
    need = int(t.force.sum())
    if need == 0 and min_masked == 0:
      continue
    m = inf.bucket(max(need, min_masked), c.buckets)
    top = max(top, m)
    image_m, _ = T.resize(_pad(image[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w], t.ph, t.pw, 0), None, c.image_size)
    label_t = _pad(fed[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w], t.ph, t.pw, c.ignore_label)
    label_m = inf.resize_nearest(label_t, c.image_size).astype(np.int32)
    logits, mask = jax.device_get(c.logits(T.normalize(image_m, c.mean, c.std)[None], label_m[None],
                                           t.force[None], c.num_patches - m))
    # Every patch missing (need > L - 1): the one patch left visible is predicted too.
    mask = np.asarray(mask[0]) | (need >= c.num_patches)
    masked_m = np.asarray(inf.patch_pixels(jnp.asarray(mask[None]), c.patch_size, *c.image_size)[0])
    composed = inf.given_logits(logits[0], label_m, masked_m, c.num_classes)
    up = inf.resize_bilinear(composed, (t.ph, t.pw))[:t.h, :t.w]
    use = mask[inf.model_patch_of_pixels((t.ph, t.pw), c.image_size, c.patch_size)][:t.h, :t.w]
    wt = inf.tent(t.ph, t.pw)[:t.h, :t.w] * use
    acc[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] += up * wt[..., None]
    weight[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] += wt
  return acc, weight, top


def _check_given(out: np.ndarray, label: np.ndarray, fillable: np.ndarray, name: str) -> None:
  """A raised error (not an assert, which -O removes): a given pixel must never change."""
  if not np.array_equal(out[~fillable], label[~fillable]):
    raise RuntimeError(f"internal error: completing {name} changed {int((out != label)[~fillable].sum())} "
                       "given pixels; please report this")


def complete_label(completers: Sequence[Completer], image: np.ndarray, label: np.ndarray, *, name: str = "",
                   unknown_value: int | None = None, missing: str = DEFAULT_MISSING, scale: str = "train"):
  """L-MAE completion of one uint8 label [H,W] given its uint8 image [H,W,3] -> (label, report fields)."""
  mode = MISSING[missing]
  codes = [c.codes(unknown_value) for c in completers]
  check_codes(codes[0])
  check_values(label, codes[0], name)
  fillable = mode.fillable(label, codes[0])
  forced_px = mode.forced(label, codes[0])
  background = float(_not_foreground(label, codes[0]).mean())
  fields = dict(method="model", background_proportion=background)
  if not fillable.any():  # nothing to fill: reported as the smallest-ratio model, run on no tile
    first = completers[route([c.ratio for c in completers], [0.0] * len(completers))]
    return label.copy(), dict(fields, changed_pixels=0, ratio=first.ratio, masked_fraction=0.0, tiles=0)
  plans = [plan_tiles(c, forced_px, scale) for c in completers]
  needs = [max(int(t.force.sum()) for t in tiles) / c.num_patches for c, tiles in zip(completers, plans)]
  index = route([c.ratio for c in completers], needs if mode.exact else [background] * len(completers))
  c, tiles = completers[index], plans[index]
  fed = np.where(forced_px, c.ignore_label, label)  # missing labels never reach the model
  acc, weight, top = model_logits(c, image, fed, tiles, 0 if mode.exact else c.budget)
  region = fillable & (weight > 0)
  if mode.exact and not region.all(where=fillable):
    raise RuntimeError(f"internal error: {int((fillable & ~region).sum())} missing pixels of {name} were in no "
                       "masked patch; please report this")
  pred = np.argmax(acc, axis=-1)
  out = inf.compose(label, pred, region)
  _check_given(out, label, fillable, name)
  return out, dict(fields, changed_pixels=int((out != label).sum()), ratio=c.ratio,
                   masked_fraction=top / c.num_patches, tiles=len(tiles))


def fill_label(method: str, image: np.ndarray, label: np.ndarray, *, name: str = "", codes: Codes,
               missing: str = DEFAULT_MISSING):
  """A non-learned fill (`fills.FILLS[method]`) of one label: missing pixels copy a given class pixel's label."""
  mode = MISSING[missing]
  if not mode.exact:
    raise ConfigError(f"--missing={missing} masks patches at a model's ratio; --method={method} needs "
                      "--missing=unknown or unknown_and_void (or use --method=model)")
  check_codes(codes)
  check_values(label, codes, name)
  fillable = mode.fillable(label, codes)
  known = codes.classes(label) & ~fillable
  out = inf.compose(label, fills.FILLS[method](label, known, image), fillable)
  _check_given(out, label, fillable, name)
  return out, dict(method=method, background_proportion=float(_not_foreground(label, codes).mean()),
                   changed_pixels=int((out != label).sum()), ratio=None, masked_fraction=None, tiles=0)


HYBRID_FILL = "geodesic"  # the fill the hybrid uses near given pixels (the better fill on CamVid's real holes)


def hybrid_radius(c: Completer, hw: tuple[int, int], scale: str) -> float:
  """The hybrid's default radius: half a model patch, in file pixels at the tiles' scale."""
  window = SCALES[scale](c, hw)
  return 0.5 * c.patch_size * max(window[0] / c.image_size[0], window[1] / c.image_size[1])


def hybrid_label(completers: Sequence[Completer], image: np.ndarray, label: np.ndarray, *, name: str = "",
                 unknown_value: int | None = None, missing: str = DEFAULT_MISSING, scale: str = "train",
                 radius: float = 0.0):
  """This project's extension (`--method=hybrid`): a missing pixel within `radius` file pixels of a given class
  pixel takes the geodesic fill (copying the label next to it is what a fill does best: scattered holes, thin
  boundary gaps), every other missing pixel the model's completion (deep inside large holes, whole missing
  objects, which a fill cannot invent). radius 0: half a model patch at the tiles' scale (`hybrid_radius`)."""
  mode = MISSING[missing]
  if not mode.exact:
    raise ConfigError(f"--missing={missing} masks patches at a model's ratio; --method=hybrid needs "
                      "--missing=unknown or unknown_and_void")
  out, fields = complete_label(completers, image, label, name=name, unknown_value=unknown_value, missing=missing,
                               scale=scale)
  codes = completers[0].codes(unknown_value)
  filled, _ = fill_label(HYBRID_FILL, image, label, name=name, codes=codes, missing=missing)
  fillable = mode.fillable(label, codes)
  known = codes.classes(label) & ~fillable
  r = float(radius) or hybrid_radius(completers[0], label.shape, scale)
  near = fillable & fills.near_known(known, r)
  out = np.where(near, filled, out).astype(label.dtype)
  _check_given(out, label, fillable, name)
  return out, dict(fields, method="hybrid", changed_pixels=int((out != label).sum()),
                   fill_fraction=float(near.sum() / max(int(fillable.sum()), 1)), radius=r)


MODEL_METHODS = ("model", "hybrid")  # the methods that need a trained L-MAE


def pair_completer(method: str, completers: Sequence[Completer] = (), *, missing: str = DEFAULT_MISSING,
                   scale: str = "train", unknown_value: int | None = None, radius: float = 0.0) -> Callable:
  """`(image uint8[H,W,3], label uint8[H,W], name=...) -> (completed label, report fields)` for one in-memory
  pair, exactly as the command completes each file (`complete_folder` uses it; experiments call it directly).

  method 'model' needs loaded Completers (`resolve_models`); a fill (`fills.FILLS`) needs none.
  """
  if method not in METHODS:
    raise ConfigError(f"--method={method!r} is unknown; expected one of {', '.join(METHODS)}")
  if method in MODEL_METHODS:
    if not completers:
      raise ConfigError(f"--method={method} needs a trained L-MAE: pass --model=RUN")
    check_codes(completers[0].codes(unknown_value))
    if method == "hybrid":
      if radius < 0:
        raise ConfigError(f"--hybrid_radius={radius}; expected pixels >= 0 (0: half a model patch)")
      return functools.partial(hybrid_label, list(completers), unknown_value=unknown_value, missing=missing,
                               scale=scale, radius=radius)
    return functools.partial(complete_label, list(completers), unknown_value=unknown_value, missing=missing,
                             scale=scale)
  codes = Codes(None, unknown_value=DEFAULT_UNKNOWN if unknown_value is None else int(unknown_value))
  check_codes(codes)
  return functools.partial(fill_label, method, codes=codes, missing=missing)


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


@dataclasses.dataclass
class FileReport:
  name: str
  out_path: str
  changed_pixels: int
  method: str                    # model | hybrid | nearest | geodesic
  ratio: float | None            # routed ratio of the model used (None: a fill)
  masked_fraction: float | None  # largest fraction of patches masked in one tile (None: a fill)
  background_proportion: float   # pixels that are no foreground class (void, unknown, background classes)
  tiles: int                     # model inputs run for this file


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_out_dir(out_dir: str, images_dir: str, labels_dir: str) -> None:
  """The output must be a folder (new or existing) outside both input folders."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise DataError(f"output {out_dir} is an existing file; expected a folder (new, or holding none of the "
                    "output names)")
  for what, folder in (("labels", labels_dir), ("images", images_dir)):
    if os.path.realpath(out_dir) == os.path.realpath(folder):
      raise DataError(f"output folder {out_dir} is an input folder ({what}); expected a new folder (inputs are "
                      "never overwritten)")
    if _inside(out_dir, folder):
      raise DataError(f"output folder {out_dir} is inside the {what} folder {folder}; expected a folder outside "
                      "the inputs (a later run would read the completed labels as inputs)")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


def remove_stale_partials(out_dir: str, log: Callable[[str], None] = print) -> list[str]:
  """Removes `.maskseg_partial_<pid>_*` folders whose process is gone (a completion killed with SIGKILL or a
  crash); folders of a live completion are left alone. Names without a pid (older versions) count as stale."""
  removed = []
  if not os.path.isdir(out_dir):
    return removed
  for entry in sorted(os.listdir(out_dir)):
    path = os.path.join(out_dir, entry)
    if not entry.startswith(PARTIAL_PREFIX) or not os.path.isdir(path):
      continue
    m = re.match(re.escape(PARTIAL_PREFIX) + r"(\d+)_", entry)
    if m and _pid_alive(int(m.group(1))):
      continue
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
    log(f"removed {path}, left by an interrupted completion (its outputs were never moved into place)")
  return removed


class Terminated(KeyboardInterrupt):
  """SIGTERM during a completion, raised like Ctrl-C so every `finally` (the staging clean-up) runs."""


@contextlib.contextmanager
def terminate_as_interrupt():
  """While active (main thread only), SIGTERM raises `Terminated` instead of killing the process outright."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    raise Terminated(f"signal {signum}")

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _describe(r: FileReport) -> str:
  if r.method not in MODEL_METHODS:
    how = r.method
  elif r.tiles == 0:
    how = "nothing to fill"
  else:
    how = (f"{r.method} ratio {r.ratio:g}, {r.masked_fraction:.0%} of patches masked, {r.tiles} "
           f"tile{'s' if r.tiles != 1 else ''}")
  return f"{r.name}: {r.changed_pixels} pixels changed ({how})"


METHODS = (*MODEL_METHODS, *fills.FILLS)


def resolve_models(models: Sequence, checkpoint: str, log: Callable[[str], None]) -> list[Completer]:
  """Completers from Completers or 'WORKDIR' / 'RATIO=WORKDIR' / (ratio, workdir) specs; one per ratio."""
  specs = [m if isinstance(m, Completer) else parse_model_spec(m) for m in models]  # validate all first
  completers = [m if isinstance(m, Completer) else load_completer(m[1], ratio=m[0], checkpoint=checkpoint, log=log)
                for m in specs]
  check_ratios(completers)
  return completers


def complete_folder(images_dir: str, labels_dir: str, out_dir: str, models: Sequence = (), *,
                    method: str = "model", missing: str = DEFAULT_MISSING, scale: str = "train",
                    checkpoint: str = "latest", unknown_value: int | None = None, radius: float = 0.0,
                    log: Callable[[str], None] = print) -> list[FileReport]:
  """Completes every label of `labels_dir` into `out_dir`; returns one report per file.

  models: Completers, or trained workdirs as 'WORKDIR', 'RATIO=WORKDIR' or (ratio, workdir) pairs (only for
  method='model'). Nothing is written unless every output name is free and every pair succeeds.
  """
  for what, value, allowed in (("method", method, METHODS), ("missing", missing, tuple(MISSING)),
                               ("scale", scale, tuple(SCALES))):
    if value not in allowed:
      raise ConfigError(f"--{what}={value!r} is unknown; expected one of {', '.join(allowed)}")
  if method in MODEL_METHODS and not models:
    raise ConfigError(f"--method={method} needs a trained L-MAE: pass --model=RUN (or --method=nearest|geodesic, "
                      "which need no model)")
  if method != "model" and not MISSING[missing].exact:
    raise ConfigError(f"--missing={missing} masks patches at a model's ratio; --method={method} needs "
                      "--missing=unknown or unknown_and_void (or use --method=model)")
  check_out_dir(out_dir, images_dir, labels_dir)
  pairs = pair_files(images_dir, labels_dir)
  outputs = [os.path.join(out_dir, os.path.basename(lp)) for _, lp, _ in pairs]
  for path in outputs:
    if os.path.exists(path):
      raise DataError(f"output file {path} already exists; refusing to overwrite it (choose a new output "
                      "folder)")
  if method in MODEL_METHODS:
    completers = resolve_models(models, checkpoint, log)
  elif models:
    log(f"note: --method={method} uses no model; ignoring --model")
  run = pair_completer(method, completers if method in MODEL_METHODS else (), missing=missing, scale=scale,
                       unknown_value=unknown_value, radius=radius)
  remove_stale_partials(out_dir, log)
  created = not os.path.isdir(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  # Outputs go to a scratch folder first and move into place only when every pair succeeded, so a bad pair
  # met halfway leaves no partial result behind (and a rerun into the same folder is not refused).
  staging = tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{os.getpid()}_", dir=out_dir)
  reports, over = [], []
  try:
    with terminate_as_interrupt():
      for (image_path, label_path, stem), out_path in zip(pairs, outputs):
        image = sources.read_image(image_path)
        label, palette, info = read_label_png(label_path)
        if label.shape != image.shape[:2]:
          raise DataError(f"label {label_path} is {label.shape[0]}x{label.shape[1]} but image {image_path} is "
                          f"{image.shape[0]}x{image.shape[1]}; expected the same size")
        out, fields = run(image, label, name=label_path)
        write_label_png(os.path.join(staging, os.path.basename(out_path)), out, palette, info)
        report = FileReport(name=os.path.basename(label_path), out_path=out_path, **fields)
        log(_describe(report))
        reports.append(report)
        if method == "model" and report.tiles:
          trained = max(c.train_ratio for c in completers if c.ratio == report.ratio)
          if report.masked_fraction > trained + 1e-9:
            over.append((report.name, report.masked_fraction, trained))
      for report in reports:
        os.replace(os.path.join(staging, os.path.basename(report.out_path)), report.out_path)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if created and not os.listdir(out_dir):  # a failed run leaves no trace (a folder it made, still empty)
      os.rmdir(out_dir)
  if over:
    worst = max(over, key=lambda o: o[1])
    log(f"warning: {len(over)} files needed more patches masked than their model was trained at (most: "
        f"{worst[0]}, {worst[1]:.0%} masked by a ratio-{worst[2]:g} model): "
        f"{', '.join(o[0] for o in over[:5])}{' ...' if len(over) > 5 else ''}; train a higher-ratio model")
  log(f"wrote {len(reports)} completed labels to {out_dir}")
  return reports


def complete_from_config(config, mdef, state) -> dict:
  """`config.mode=complete`: this run's model (plus `lmae.complete_models`) on the `lmae.complete_*` folders.

  `lmae.complete_missing` / `complete_scale`, where the config has them, pick `--missing` / `--scale`.
  """
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
                            [own, *lc.complete_models], checkpoint=lc.complete_checkpoint,
                            missing=lc.get("complete_missing", DEFAULT_MISSING),
                            scale=lc.get("complete_scale", "train"))
  return {"complete/files": float(len(reports)),
          "complete/changed_pixels": float(sum(r.changed_pixels for r in reports))}


EXIT_SIGNAL = {Terminated: 128 + signal.SIGTERM, KeyboardInterrupt: 128 + signal.SIGINT}


def run_main(argv: Sequence[str] | None = None) -> None:
  """Console script `maskseg-complete`; bad input prints `error: ...` and exits 2 (SIGTERM 143, Ctrl-C 130)."""
  ap = argparse.ArgumentParser(prog="maskseg-complete", description=__doc__.split("\n")[0])
  ap.add_argument("--images", required=True, help="folder of images (.jpg/.jpeg/.png)")
  ap.add_argument("--labels", required=True, help="folder of <image stem>.png labels (palette or grayscale)")
  ap.add_argument("--out", required=True, help="folder for the completed labels (new, outside the inputs)")
  ap.add_argument("--model", action="append", default=[],
                  help="trained L-MAE workdir, optionally RATIO=WORKDIR (default ratio: its lmae.mask_ratio); "
                       "repeat for several ratios (one model per ratio); needed by --method=model")
  ap.add_argument("--method", default="model", choices=METHODS,
                  help="model (L-MAE, default), hybrid (geodesic fill near given pixels, the model elsewhere; "
                       "this project's extension) or a non-learned fill (no model needed)")
  ap.add_argument("--hybrid_radius", type=float, default=0.0,
                  help="hybrid: missing pixels within this many file pixels of a given class pixel take the fill "
                       "(default 0: half a model patch at the tile scale)")
  ap.add_argument("--missing", default=DEFAULT_MISSING, choices=tuple(MISSING),
                  help="pixels to fill: unknown_and_void (default), unknown (void is given), paper (also "
                       "background classes, Background-First at the model's ratio)")
  ap.add_argument("--scale", default="train", choices=tuple(SCALES),
                  help="train: tiles at the run's training field of view (default); fit: whole file resized")
  ap.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
  ap.add_argument("--unknown_value", type=int, default=None, help="label value of pixels to fill (default: "
                  f"the model's lmae.unknown_value, {DEFAULT_UNKNOWN}); 255 makes void the unknown marker")
  args = ap.parse_args(argv)
  try:
    reports = complete_folder(args.images, args.labels, args.out, args.model, method=args.method,
                              missing=args.missing, scale=args.scale, checkpoint=args.checkpoint,
                              unknown_value=args.unknown_value, radius=args.hybrid_radius)
  except MasksegError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt as e:
    what = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
    print(f"error: interrupted by {what}; nothing was written to {args.out} (partial outputs removed)",
          file=sys.stderr)
    sys.exit(EXIT_SIGNAL[type(e) if type(e) in EXIT_SIGNAL else KeyboardInterrupt])
  print(json.dumps({"files": len(reports), "changed_pixels": sum(r.changed_pixels for r in reports),
                    "method": args.method, "missing": args.missing}))


if __name__ == "__main__":
  run_main()
