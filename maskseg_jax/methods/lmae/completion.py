"""Label completion (the protocol of `maskseg-complete`): a folder of images + incomplete labels -> completed labels, by L-MAE or a non-learned fill.

  maskseg-complete --images=DIR --labels=DIR --out=NEW_DIR --model=RUN_DIR [--model=0.7=RUN_DIR2 ...]
      [--method=auto|model|hybrid|nearest|geodesic] [--hybrid_radius=PX] [--min_missing=FRACTION]
      [--missing=unknown_and_void|unknown|paper] [--scale=train|fit]

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

This module holds the trained model, its tiles and one file's completion (`complete_label`, `fill_label`); the
methods built on them, `auto` (the default: each hole by its shape), `hybrid` and `pair_completer`, which picks
one for a pair, are in `completion_methods.py`.

`--method=model` (needs --model): in `unknown*` modes exactly the patches that hold a missing pixel
(after the nearest-neighbour resize of the label to the model input) are masked, so every given label outside
them reaches the model; the count is rounded up to one of a few static buckets (`inference.BUCKET_FRACTIONS`
of L, plus each model's training budget) so the jitted model compiles once per bucket, the extra masked patches
chosen Background-First (their pixels are not written). `--scale=train` (default) cuts the file into the fewest
evenly overlapping tiles of the field of view the run was trained on (`data.crop_size / data.image_scale` file
pixels, resized to `model.image_size`; a side within 10% of it is one tile, a shorter one is padded as training
pads); `fit` resizes the whole file to the model input. At model resolution the logits are composed before any
resize (`inference.given_logits`): the model's at pixels of masked patches; at visible pixels, whose model
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
`--min_missing=F` (this project's extension, model and hybrid; default 0 = every patch holding a missing pixel
is masked): a patch is masked only when at least a fraction F of its pixels is missing. Scattered holes (blobs,
thin boundary gaps, void rims) touch most patches while missing little of each, so exact masking runs the model
far above the ratio it was trained at with almost no label visible; with F > 0 the lightly damaged patches stay
visible, their missing pixels pre-filled by the geodesic fill (which the model reads as given labels and which
fills those pixels in the output), and the model completes the patches that are mostly missing.
`--method=nearest|geodesic` (`maskseg_jax.methods.lmae.fills`, no model): the unknown pixels take the label of the nearest
(Euclidean / colour-geodesic) given class pixel, so a user can compare fills and the model on their own folder.

Files: palette PNGs are written back with their palette, grayscale as grayscale, colour (RGB) labels read and
written through a `--palette` file (`color_labels.py`); `OUT/review/` holds a preview and a report per file
(pixels filled, method, the model's mean confidence on them) and report.csv (`review.py`); nothing is ever
overwritten; the output folder may not be, or lie inside, an input folder. Outputs are staged in a hidden
`.maskseg_partial_<pid>_*` folder and moved into place only when every pair succeeded; SIGTERM and Ctrl-C remove
it (exit 143 / 130, nothing written), and a later run into the same folder removes partial folders left by a
killed run (its process no longer alive). Bad input: one `error: ...` line, exit 2.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax.data import transforms as T
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.lmae import fills
from maskseg_jax.methods.lmae import inference as inf
from maskseg_jax.methods.lmae import patch_masks as P
from maskseg_jax.methods.lmae import review
from maskseg_jax.methods.lmae.config import LMAE_DEFAULTS
# The label codes and `--missing` choices (label_codes.py), re-exported: this module is the protocol's entry point.
from maskseg_jax.methods.lmae.label_codes import (DEFAULT_IGNORE, DEFAULT_MISSING, DEFAULT_UNKNOWN,  # noqa: F401
                                                  MISSING, Codes, Missing, check_codes, check_values,
                                                  not_foreground)


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
  # (image f32[1,h,w,3], label i32[1,h,w], force bool[1,L], given bool[1,h,w] (the pixels holding a given label),
  #  k static) -> (logits f32[1,h,w,N], mask bool[1,L])
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
  options = inf.completion_options(lc)
  traces: list = []

  pixel_context = bool(lc.get("pixel_context", LMAE_DEFAULTS["pixel_context"]))  # absent in older runs

  @functools.partial(jax.jit, static_argnames="k")
  def run(params, batch_stats, image, label, force, given, *, k):
    traces.append(k)  # runs once per compile
    ids_keep, ids_masked, mask = inf.strategy_mask(label, key, strategy="background_first", k=k, p=p,
                                                   background_classes=bg, ignore_label=ignore, force=force)
    logits = inf.completion_logits(mdef.merge(params, batch_stats), image, label, ids_keep, ids_masked,
                                   given_px=given if pixel_context else None, **options)
    return logits, mask

  return Completer(name=name, ratio=train_ratio if ratio is None else float(ratio), train_ratio=train_ratio,
                   num_classes=int(dc.num_classes), patch_size=p, image_size=(h, w), background_classes=bg,
                   ignore_label=ignore, unknown_value=int(lc.get("unknown_value", DEFAULT_UNKNOWN)),
                   mean=tuple(dc.mean), std=tuple(dc.std), window=train_window(dc, (h, w)),
                   logits=lambda image, label, force, given, k: run(params, batch_stats, image, label, force,
                                                                     given, k=k),
                   traces=traces)


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


def plan_tiles(c: Completer, forced_px: np.ndarray, scale: str, min_missing: float = 0.0,
               any_px: np.ndarray | None = None) -> list[Tile]:
  """The tiles of a file for model `c`, each with the patches its forced pixels make masked (any forced pixel,
  or at least a `min_missing` fraction of the patch's pixels), and those holding any `any_px` pixel."""
  hw = forced_px.shape
  window = SCALES[scale](c, hw)
  (ys, th), (xs, tw) = (inf.tile_starts(hw[i], window[i]) for i in (0, 1))
  ph, pw = max(th, window[0]), max(tw, window[1])
  patch_of = inf.model_patch_of_pixels((ph, pw), c.image_size, c.patch_size)
  tiles = []
  for y0 in ys:
    for x0 in xs:
      force = np.zeros(c.num_patches, bool)
      for pixels, fraction in ((forced_px, min_missing), (any_px, 0.0)):
        if pixels is not None:
          px = np.zeros((ph, pw), bool)
          px[:th, :tw] = pixels[y0:y0 + th, x0:x0 + tw]
          force |= inf.patches_with(px, patch_of, c.num_patches, fraction)
      tiles.append(Tile(y0, x0, th, tw, ph, pw, force))
  return tiles


def _pad(x: np.ndarray, ph: int, pw: int, value) -> np.ndarray:
  pads = ((0, ph - x.shape[0]), (0, pw - x.shape[1])) + ((0, 0),) * (x.ndim - 2)
  return np.pad(x, pads, constant_values=value)


def model_logits(c: Completer, image: np.ndarray, fed: np.ndarray, given: np.ndarray, tiles: Sequence[Tile],
                 min_masked: int):
  """(blended logits f32[H,W,N], weight f32[H,W], largest masked count) over `tiles`; `given` bool[H,W]: the
  pixels of `fed` that hold a given label (not missing, not pre-filled).

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
    given_m = inf.resize_nearest(_pad(given[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w], t.ph, t.pw, False), c.image_size)
    logits, mask = jax.device_get(c.logits(T.normalize(image_m, c.mean, c.std)[None], label_m[None],
                                           t.force[None], given_m[None], c.num_patches - m))
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


def check_given(out: np.ndarray, label: np.ndarray, fillable: np.ndarray, name: str) -> None:
  """A raised error (not an assert, which -O removes): a given pixel must never change."""
  if not np.array_equal(out[~fillable], label[~fillable]):
    raise RuntimeError(f"internal error: completing {name} changed {int((out != label)[~fillable].sum())} "
                       "given pixels; please report this")


def complete_label(completers: Sequence[Completer], image: np.ndarray, label: np.ndarray, *, name: str = "",
                   unknown_value: int | None = None, missing: str = DEFAULT_MISSING, scale: str = "train",
                   min_missing: float = 0.0, prefill: np.ndarray | None = None,
                   force: tuple[np.ndarray, np.ndarray] | None = None):
  """L-MAE completion of one uint8 label [H,W] given its uint8 image [H,W,3] -> (label, report fields).

  min_missing > 0 (this project's extension, `--min_missing`): a model patch is masked only when at least this
  fraction of its pixels is missing; in the patches left visible the missing pixels are pre-filled by the
  geodesic fill, which the model then reads as given labels and which fills them in the output. `prefill`: that
  fill when the caller has it already (the hybrid), else it is computed here. `force=(any_px, fraction_px)`
  (the auto method): the patches holding an `any_px` pixel, or at least `min_missing` of `fraction_px`
  pixels, are masked instead (every other missing pixel reaches the model pre-filled; `prefill` required)."""
  mode = MISSING[missing]
  if min_missing > 0 and not mode.exact:
    raise ConfigError(f"--min_missing={min_missing:g} needs --missing=unknown or unknown_and_void (the paper "
                      "protocol masks at the model's ratio)")
  codes = [c.codes(unknown_value) for c in completers]
  check_codes(codes[0])
  check_values(label, codes[0], name)
  fillable = mode.fillable(label, codes[0])
  forced_px = mode.forced(label, codes[0])
  background = float(not_foreground(label, codes[0]).mean())
  fields = dict(method="model", background_proportion=background)
  if not fillable.any():  # nothing to fill: reported as the smallest-ratio model, run on no tile
    first = completers[route([c.ratio for c in completers], [0.0] * len(completers))]
    return label.copy(), dict(fields, changed_pixels=0, ratio=first.ratio, masked_fraction=0.0, tiles=0)
  if force is not None and prefill is None:
    raise ValueError("complete_label(force=...) needs the prefill of the missing pixels it leaves visible")
  any_px, fraction_px = force if force is not None else (None, forced_px)
  plans = [plan_tiles(c, fraction_px, scale, min_missing, any_px) for c in completers]
  needs = [max(int(t.force.sum()) for t in tiles) / c.num_patches for c, tiles in zip(completers, plans)]
  index = route([c.ratio for c in completers], needs if mode.exact else [background] * len(completers))
  c, tiles = completers[index], plans[index]
  if min_missing <= 0 and force is None:
    prefill = None
  elif prefill is None:
    prefill = fills.FILLS[PREFILL](label, codes[0].classes(label) & ~fillable, image)
  if prefill is not None:  # missing pixels of visible patches reach the model as the fill's labels
    fed = np.where(forced_px, prefill, label)
  else:
    fed = np.where(forced_px, c.ignore_label, label)  # missing labels never reach the model
  given = codes[0].classes(label) & ~fillable
  acc, weight, top = model_logits(c, image, fed, given, tiles, 0 if mode.exact else c.budget)
  region = fillable & (weight > 0)
  if prefill is None and mode.exact and not region.all(where=fillable):
    raise RuntimeError(f"internal error: {int((fillable & ~region).sum())} missing pixels of {name} were in no "
                       "masked patch; please report this")
  out = inf.compose(label, np.argmax(acc, axis=-1), region)
  fields["confidence_map"] = review.confidence_map(acc, weight, region)  # NaN where the model did not fill
  if prefill is not None:
    out = inf.compose(out, prefill, fillable & ~region)
    fields["prefilled_fraction"] = float((fillable & ~region).sum() / max(int(fillable.sum()), 1))
  check_given(out, label, fillable, name)
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
  check_given(out, label, fillable, name)
  return out, dict(method=method, background_proportion=float(not_foreground(label, codes).mean()),
                   changed_pixels=int((out != label).sum()), ratio=None, masked_fraction=None, tiles=0)


HYBRID_FILL = "geodesic"  # the fill the hybrid uses near given pixels (the better fill on CamVid's real holes)
PREFILL = HYBRID_FILL     # the fill of the missing pixels of patches `min_missing` leaves visible (the same, so
                          # the hybrid's fill serves as its prefill)
