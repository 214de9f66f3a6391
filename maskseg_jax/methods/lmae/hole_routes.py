"""Per-hole routing of `--method=auto` (this project's extension, the completion command's default).

Which completion wins depends on the hole's shape (experiments/results/lmae_real_holes.md): the nearest fill
on thin gaps (a band along class boundaries: copying the label next to a pixel is all there is to do), the
model on whole missing objects (a fill can only copy the surroundings, the object's class is often on no rim),
and the hybrid (the geodesic fill near the rim, the model deep inside) on smooth blobs that cross regions. A
user cannot be asked to know which damage a folder holds, and one folder may hold all three, so every
8-connected hole of missing pixels is routed by measurements that need no truth:
  thickness   the largest distance of a hole pixel to the hole's outside (the radius of the largest disc that
              fits in it), file pixels, and elongation, its area over the area of that disc: at most `thin_px`
              thick and at least `min_elongation` long -> "thin" (a band; a small compact hole is a blob),
              and any hole at most `sliver_px` thick, whatever its length (a sliver the model cannot see);
  edge        the image's mean Sobel gradient on the hole's outline over its mean on the whole image: a hole
              that is an object removed whole has the object's outline, which is an edge of the image; a
              blob's outline follows no edge (ratio near 1). At least `edge_ratio` -> an object candidate;
  novelty     (after the model's pass, `confirm_objects`) the share of a candidate's pixels the model gives a
              class that no given pixel on the hole's rim has: a missing object is something the rim does not
              show; a blob is filled with what surrounds it. At least `min_novelty` -> "object", else "blob".
  confidence  deep in a blob, the model's label stands only where its top probability is at least
              `blob_confidence`; elsewhere the blob's geodesic fill, which is right more often there.
The thresholds were chosen on the development split (train@dev, CamVid at 360x480), never on val, as the rule
with the best worst-damage margin over the best fill: experiments/results/lmae_dev_protocol.md. Pure
numpy/scipy; `completion_methods.auto_label` acts on the routes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

ROUTES = ("thin", "object", "blob")  # route ids 1, 2, 3 in the per-pixel map (0: not missing)
THIN, OBJECT, BLOB = 1, 2, 3
_EIGHT = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class HoleRule:
  thin_px: float = 12.0       # thickness at most this (file pixels) ...
  min_elongation: float = 1.5  # ... and area at least this many times the thickness disc's: a thin gap
  sliver_px: float = 3.0       # thickness at most this: thin whatever its shape (about half a model pixel at
                               # the CamVid recipe's scale, too narrow for the model to resolve; 0: off)
  edge_ratio: float = 1.5      # outline gradient / image mean gradient at least this: an object candidate
  min_novelty: float = 0.4     # a candidate whose pixels the model gives classes absent from its rim this often
  rim_px: float = 3.0          # the rim: given pixels within this distance of the hole
  blob_confidence: float = 0.6  # deep in a blob, the model's label only where it is at least this sure, else
                                # the fill's (0: the model's throughout)


def image_gradient(image: np.ndarray) -> np.ndarray:
  """f32[H,W] Sobel gradient magnitude of the image's grey level."""
  grey = np.asarray(image, np.float32).mean(axis=-1)
  return np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))


def hole_features(missing: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(holes int[H,W]: 0 outside, k for the k-th 8-connected hole; {area, thickness, edge}: f[n] per hole)."""
  holes, n = ndimage.label(np.asarray(missing, bool), structure=_EIGHT)
  if n == 0:
    return holes, {k: np.zeros(0) for k in ("area", "thickness", "edge")}
  index = np.arange(1, n + 1)
  depth = ndimage.distance_transform_edt(holes > 0)
  grad = image_gradient(image)
  outline = (holes > 0) & ~ndimage.binary_erosion(holes > 0, structure=_EIGHT, border_value=1)
  on_outline = np.where(outline, holes, 0)
  mean_grad = max(float(grad.mean()), 1e-6)
  edge = np.nan_to_num(ndimage.mean(grad, on_outline, index)) / mean_grad  # a hole with no outline: 0
  return holes, dict(area=ndimage.sum(np.ones_like(depth), holes, index),
                     thickness=ndimage.maximum(depth, holes, index), edge=edge)


def route_of_holes(features: dict[str, np.ndarray], rule: HoleRule) -> np.ndarray:
  """int[n] route id per hole (THIN, OBJECT candidate or BLOB) from its features."""
  disc = np.pi * np.maximum(features["thickness"], 0.5) ** 2
  thin = (features["thickness"] <= rule.thin_px) & (features["area"] >= rule.min_elongation * disc)
  thin |= features["thickness"] <= rule.sliver_px
  return np.where(thin, THIN, np.where(features["edge"] >= rule.edge_ratio, OBJECT, BLOB)).astype(np.int8)


def route_pixels(missing: np.ndarray, image: np.ndarray, rule: HoleRule = HoleRule()) -> tuple[np.ndarray, np.ndarray]:
  """(int8[H,W] each missing pixel's route id, 0 elsewhere; int[H,W] its hole's index, 0 elsewhere)."""
  holes, features = hole_features(missing, image)
  table = np.concatenate([[0], route_of_holes(features, rule)]).astype(np.int8)
  return table[holes], holes


def confirm_objects(routes: np.ndarray, holes: np.ndarray, predicted: np.ndarray, label: np.ndarray,
                    known: np.ndarray, rule: HoleRule = HoleRule()) -> np.ndarray:
  """`routes` with each object candidate kept only where the model's `predicted` classes show something its
  rim does not: at least `min_novelty` of its pixels hold a class absent from the given pixels within `rim_px`
  of it; the other candidates become blobs."""
  out = routes.copy()
  for k in np.unique(holes[routes == OBJECT]):
    hole = holes == k
    near = ndimage.distance_transform_edt(~hole) <= rule.rim_px
    rim = np.unique(label[near & known])
    novelty = float(np.mean(~np.isin(predicted[hole], rim)))
    if novelty < rule.min_novelty:
      out[hole] = BLOB
  return out
