"""The completion methods, one per `--method`, and `pair_completer`, which picks one for a pair.

  model    `completion.complete_label`: the L-MAE fills every missing pixel (the paper).
  hybrid   this project's extension: the geodesic fill near given pixels, the model deeper in.
  auto     this project's extension, the default: each hole by its shape (`hole_routes`).
  nearest, geodesic  the non-learned fills (`fills.FILLS`), for comparison and when no model is trained.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.lmae import fills, hole_routes
from maskseg_jax.methods.lmae import inference as inf
from maskseg_jax.methods.lmae.completion import (HYBRID_FILL, MISSING, SCALES, Completer, check_given,
                                                 complete_label, fill_label)
from maskseg_jax.methods.lmae.label_codes import (DEFAULT_MISSING, DEFAULT_UNKNOWN, Codes, check_codes,
                                                  check_values)


def hybrid_radius(c: Completer, hw: tuple[int, int], scale: str) -> float:
  """The hybrid's default radius: half a model patch, in file pixels at the tiles' scale."""
  window = SCALES[scale](c, hw)
  return 0.5 * c.patch_size * max(window[0] / c.image_size[0], window[1] / c.image_size[1])


def hybrid_label(completers: Sequence[Completer], image: np.ndarray, label: np.ndarray, *, name: str = "",
                 unknown_value: int | None = None, missing: str = DEFAULT_MISSING, scale: str = "train",
                 radius: float = 0.0, min_missing: float = 0.0):
  """This project's extension (`--method=hybrid`): a missing pixel within `radius` file pixels of a given class
  pixel takes the geodesic fill (copying the label next to it is what a fill does best: scattered holes, thin
  boundary gaps), every other missing pixel the model's completion (deep inside large holes, whole missing
  objects, which a fill cannot invent). radius 0: half a model patch at the tiles' scale (`hybrid_radius`)."""
  mode = MISSING[missing]
  if not mode.exact:
    raise ConfigError(f"--missing={missing} masks patches at a model's ratio; --method=hybrid needs "
                      "--missing=unknown or unknown_and_void")
  codes = completers[0].codes(unknown_value)
  filled, _ = fill_label(HYBRID_FILL, image, label, name=name, codes=codes, missing=missing)
  out, fields = complete_label(completers, image, label, name=name, unknown_value=unknown_value, missing=missing,
                               scale=scale, min_missing=min_missing, prefill=filled)
  fillable = mode.fillable(label, codes)
  known = codes.classes(label) & ~fillable
  r = float(radius) or hybrid_radius(completers[0], label.shape, scale)
  near = fillable & fills.near_known(known, r)
  out = np.where(near, filled, out).astype(label.dtype)
  check_given(out, label, fillable, name)
  if "confidence_map" in fields:  # the fill's pixels carry no model confidence
    fields["confidence_map"] = np.where(near, np.nan, fields["confidence_map"]).astype(np.float32)
  return out, dict(fields, method="hybrid", changed_pixels=int((out != label).sum()),
                   fill_fraction=float(near.sum() / max(int(fillable.sum()), 1)), radius=r)


AUTO_MIN_MISSING = 0.5  # auto: a blob's patch is masked when at least this much of it is missing (the hybrid's
                        # --min_missing that won on blobs, experiments/results/lmae_real_holes.md)


def auto_label(completers: Sequence[Completer], image: np.ndarray, label: np.ndarray, *, name: str = "",
               unknown_value: int | None = None, missing: str = DEFAULT_MISSING, scale: str = "train",
               radius: float = 0.0, min_missing: float = AUTO_MIN_MISSING,
               rule: hole_routes.HoleRule = hole_routes.HoleRule()):
  """This project's extension (`--method=auto`, the default): each hole takes the completion that wins on its
  shape (`hole_routes`): thin gaps the nearest fill; holes outlined by image edges (object candidates) get
  their patches masked whole, and stay objects (the model's completion throughout) where the model puts a class
  their rim lacks; other holes (blobs) the hybrid: the geodesic fill within `radius` of a given pixel, in
  patches less than `min_missing` missing and where the model is less sure than `rule.blob_confidence`, the
  model elsewhere. One model pass serves every hole: the missing
  pixels it leaves visible reach it pre-filled by their hole's fill."""
  mode = MISSING[missing]
  if not mode.exact:
    raise ConfigError(f"--missing={missing} masks patches at a model's ratio; --method=auto needs "
                      "--missing=unknown or unknown_and_void")
  codes = completers[0].codes(unknown_value)
  check_codes(codes)
  check_values(label, codes, name)
  fillable = mode.fillable(label, codes)
  known = codes.classes(label) & ~fillable
  routes, holes = hole_routes.route_pixels(fillable, image, rule)
  nearest = inf.compose(label, fills.nearest_fill(label, known, image), fillable)
  geodesic = inf.compose(label, fills.geodesic_fill(label, known, image), fillable)
  prefill = np.where(routes == hole_routes.THIN, nearest, geodesic)
  out, fields = complete_label(completers, image, label, name=name, unknown_value=unknown_value, missing=missing,
                               scale=scale, min_missing=min_missing, prefill=prefill,
                               force=(routes == hole_routes.OBJECT, routes == hole_routes.BLOB))
  routes = hole_routes.confirm_objects(routes, holes, out, label, known, rule)  # the model's own view decides
  r = float(radius) or hybrid_radius(completers[0], label.shape, scale)
  blob = routes == hole_routes.BLOB
  near_blob = blob & fills.near_known(known, r)
  conf = fields.get("confidence_map")  # absent when the model filled nothing
  unsure = blob & (np.nan_to_num(conf, nan=1.0) < rule.blob_confidence) if conf is not None else False
  filled_by_fill = (routes == hole_routes.THIN) | near_blob | unsure
  out = np.where(filled_by_fill, prefill, out).astype(label.dtype)
  check_given(out, label, fillable, name)
  if "confidence_map" in fields:  # the fills' pixels carry no model confidence
    fields["confidence_map"] = np.where(filled_by_fill, np.nan, fields["confidence_map"]).astype(np.float32)
  share = {route: float((routes == i + 1).sum() / max(int(fillable.sum()), 1))
           for i, route in enumerate(hole_routes.ROUTES)}
  return out, dict(fields, method="auto", changed_pixels=int((out != label).sum()), hole_routes=share, radius=r)


MODEL_METHODS = ("auto", "model", "hybrid")  # the methods that need a trained L-MAE


def pair_completer(method: str, completers: Sequence[Completer] = (), *, missing: str = DEFAULT_MISSING,
                   scale: str = "train", unknown_value: int | None = None, radius: float = 0.0,
                   min_missing: float | None = None, num_classes: int | None = None,
                   rule: hole_routes.HoleRule = hole_routes.HoleRule()) -> Callable:
  """`(image uint8[H,W,3], label uint8[H,W], name=...) -> (completed label, report fields)` for one in-memory
  pair, exactly as the command completes each file (`complete_folder` uses it; experiments call it directly).
  The model methods' fields include `confidence_map` (float32[H,W], NaN where the model filled nothing).

  method 'model' needs loaded Completers (`resolve_models`); a fill (`fills.FILLS`) needs none, but the class
  count (`num_classes`), so that it refuses the label values the model path refuses (`check_values`).
  """
  if method not in METHODS:
    raise ConfigError(f"--method={method!r} is unknown; expected one of {', '.join(METHODS)}")
  if min_missing is None:  # the method's own default
    min_missing = AUTO_MIN_MISSING if method == "auto" else 0.0
  if method in MODEL_METHODS:
    if not completers:
      raise ConfigError(f"--method={method} needs a trained L-MAE: pass --model=RUN")
    check_codes(completers[0].codes(unknown_value))
    if not 0.0 <= min_missing <= 1.0:
      raise ConfigError(f"--min_missing={min_missing}; expected a fraction of a patch's pixels in [0, 1] (0: "
                        "every patch holding a missing pixel is masked)")
    if method in ("hybrid", "auto") and radius < 0:
      raise ConfigError(f"--hybrid_radius={radius}; expected pixels >= 0 (0: half a model patch)")
    if method == "hybrid":
      return functools.partial(hybrid_label, list(completers), unknown_value=unknown_value, missing=missing,
                               scale=scale, radius=radius, min_missing=min_missing)
    if method == "auto" and MISSING[missing].exact:
      return functools.partial(auto_label, list(completers), unknown_value=unknown_value, missing=missing,
                               scale=scale, radius=radius, min_missing=min_missing, rule=rule)
    # model, or auto under --missing=paper (no holes to route: patches are masked at the model's ratio)
    return functools.partial(complete_label, list(completers), unknown_value=unknown_value, missing=missing,
                             scale=scale, min_missing=min_missing if method == "model" else 0.0)
  if num_classes is None:
    raise ConfigError(f"--method={method} needs the number of classes to check every label value (values that "
                      "are no class, void or the unknown marker are refused, as with the model): pass "
                      "--num_classes=N, or --model=RUN to take it from a run")
  codes = Codes(int(num_classes), unknown_value=DEFAULT_UNKNOWN if unknown_value is None else int(unknown_value))
  check_codes(codes)
  return functools.partial(fill_label, method, codes=codes, missing=missing)


METHODS = (*MODEL_METHODS, *fills.FILLS)
DEFAULT_METHOD = "auto"
