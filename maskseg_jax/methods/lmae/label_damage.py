"""How real labels break: the damage protocol `experiments/lmae_real_holes.py` scores completion on.

A broken label a data team receives is not a grid of missing square patches. Annotators (and the tools that
convert their polygons) leave
  blobs       smooth irregular holes: regions nobody painted, a brush that missed, a crop of a larger mask
              tool; their outline follows no patch grid and no class boundary;
  objects     whole objects missing: an instance the annotator skipped (a far car, a pedestrian, a sign) is
              absent from the label, so the hole has the object's shape and its class often appears nowhere
              on the hole's rim;
  boundaries  thinned boundaries: polygons drawn slightly inside the object, so a band of a few pixels along
              every class boundary is unlabelled, exactly where labels are hardest.
A patch-grid mask (the paper's protocol and the L-MAE evaluator's) hides square tiles aligned with the model's
own patches: it favours a patch-wise model (the hole is one of its tokens) and rarely removes a whole object
or a boundary band. On CamVid, which has no background class, the evaluator's "Background-First" masks are
mostly random patches (only void patches rank first), so they measure neither realistic case.

Each damage is a pure function `(label uint8[H,W], rng, **params) -> damaged uint8[H,W]`: missing pixels are
set to `UNKNOWN` (254, the completion command's default `--unknown_value`); every other pixel keeps its value.
Only class pixels (`< UNKNOWN`) are ever damaged, so void (255) stays void and the holes are exactly the
pixels with a known truth that a completion must fill. Fractions are of the label's class pixels. Registry
`DAMAGES`; `DEFAULTS` holds the protocol's parameters at CamVid's native 360x480; `damage_rng` gives each
(seed, image, kind) its own generator, so a damaged label does not depend on which other images or kinds ran.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
from scipy import ndimage

UNKNOWN = 254

Damage = Callable[..., np.ndarray]


def class_pixels(label: np.ndarray) -> np.ndarray:
  """bool[H,W]: pixels holding a class id (not void 255, not already unknown 254)."""
  return label < UNKNOWN


def _apply(label: np.ndarray, hole: np.ndarray) -> np.ndarray:
  return np.where(hole & class_pixels(label), np.uint8(UNKNOWN), label).astype(np.uint8)


def blobs(label: np.ndarray, rng: np.random.Generator, *, fraction: float = 0.3, size: float = 0.04) -> np.ndarray:
  """Smooth random blobs covering `fraction` of the class pixels: white noise blurred by a Gaussian of
  `size` x the shorter side, thresholded at the quantile that hides exactly that fraction."""
  cls = class_pixels(label)
  if not cls.any() or fraction <= 0:
    return label.astype(np.uint8, copy=True)
  sigma = max(1.0, size * min(label.shape))
  noise = ndimage.gaussian_filter(rng.standard_normal(label.shape), sigma, mode="wrap")
  k = int(round(min(fraction, 1.0) * cls.sum()))
  if k == 0:
    return label.astype(np.uint8, copy=True)
  values = noise[cls]
  threshold = np.partition(values, values.size - k)[values.size - k]
  return _apply(label, noise >= threshold)


def components(label: np.ndarray) -> list[np.ndarray]:
  """Instances, approximated by the 8-connected components of each class (bool[H,W] each)."""
  out = []
  eight = np.ones((3, 3), bool)
  for c in np.unique(label[class_pixels(label)]):
    parts, n = ndimage.label(label == c, structure=eight)
    out += [parts == i for i in range(1, n + 1)]
  return out


def objects(label: np.ndarray, rng: np.random.Generator, *, fraction: float = 0.3,
            max_object: float = 0.05) -> np.ndarray:
  """Whole objects removed, in random order, while the removed pixels stay within `fraction` of the class
  pixels. Components larger than `max_object` of the image (road, sky, buildings: stuff, not skipped
  instances) are never removed, so the holes are object-sized."""
  cls = class_pixels(label)
  budget = int(round(fraction * cls.sum()))
  limit = max_object * label.size
  hole = np.zeros(label.shape, bool)
  used = 0
  parts = components(label)
  for i in rng.permutation(len(parts)):
    n = int(parts[i].sum())
    if n <= limit and used + n <= budget:
      hole |= parts[i]
      used += n
  return _apply(label, hole)


def boundary_band(label: np.ndarray, width: float) -> np.ndarray:
  """bool[H,W]: class pixels within Euclidean distance `width` of a pixel of another class (void borders are
  no class boundary)."""
  cls = class_pixels(label)
  band = np.zeros(label.shape, bool)
  for c in np.unique(label[cls]):
    other = cls & (label != c)
    if other.any():
      band |= (label == c) & (ndimage.distance_transform_edt(~other) <= width)
  return band


def boundaries(label: np.ndarray, rng: np.random.Generator | None = None, *, width: float = 2.0) -> np.ndarray:
  """A band of `width` pixels on each side of every class boundary set to unknown (deterministic: `rng` is
  accepted for the common signature and unused)."""
  return _apply(label, boundary_band(label, width))


DAMAGES: dict[str, Damage] = {
    "blobs": blobs,
    "objects": objects,
    "boundaries": boundaries,
}
# The protocol's parameters at CamVid's native 360x480 (blob sigma ~14 px, objects below 5% of the image,
# a 2 px band each side of a boundary, which leaves a 4 px gap: a thin pole may vanish whole).
DEFAULTS: dict[str, dict] = {
    "blobs": {"fraction": 0.3, "size": 0.04},
    "objects": {"fraction": 0.3, "max_object": 0.05},
    "boundaries": {"width": 2.0},
}


def damage_rng(seed: int, image_id: str, kind: str) -> np.random.Generator:
  """The generator of one (seed, image, damage kind): fixed per image, independent of the others."""
  return np.random.default_rng([int(seed), zlib.crc32(image_id.encode()), zlib.crc32(kind.encode())])


def damage(kind: str, label: np.ndarray, *, seed: int, image_id: str, **params) -> np.ndarray:
  """`DAMAGES[kind]` with `DEFAULTS[kind]` updated by `params`, seeded by (seed, image_id, kind)."""
  return DAMAGES[kind](label, damage_rng(seed, image_id, kind), **{**DEFAULTS[kind], **params})


def holes(damaged: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """bool[H,W]: the pixels a completion must fill and is scored on (damaged, with a class in the truth)."""
  return (damaged == UNKNOWN) & class_pixels(truth)
