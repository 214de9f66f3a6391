"""Non-learned label completions: the baselines every L-MAE evaluation reports beside the model.

Each fill maps `(label int[H,W], known bool[H,W], image uint8[H,W,3])` to a completed int[H,W] label that equals
`label` wherever `known` is True and, everywhere else, holds a class copied from a known pixel. A fill reads
`label` only at known pixels (the masked labels are hidden from it; a test proves it), so it is a fair
competitor: it sees exactly what the model sees. An image with no known pixel is filled with `EMPTY_FILL`.

  nearest   the label of the nearest known pixel (Euclidean), `scipy.ndimage.distance_transform_edt`
  geodesic  the label of the known pixel reached by the cheapest 8-connected path, where a step costs its
            length plus `COLOUR_COST` times the RGB distance it crosses: holes are filled along image regions,
            so a boundary in the image stops a label from leaking across it (colour-aware nearest neighbour)

Registry `FILLS`; `fill_batch` runs one over a batch (host-side numpy/scipy, outside the jitted step);
`near_known` marks the pixels a fill reaches within a radius (the completion's `hybrid` method uses it).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

EMPTY_FILL = 0          # class written where an image has no known pixel at all
COLOUR_COST = 30.0      # geodesic: cost of crossing an RGB distance of 1 (colours scaled to [0, 1]), per step

Fill = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _empty(label: np.ndarray, known: np.ndarray) -> np.ndarray | None:
  """The answer when nothing is unknown or nothing is known, else None."""
  if known.all():
    return label.copy()
  if not known.any():
    return np.where(known, label, EMPTY_FILL).astype(label.dtype)
  return None


def nearest_fill(label: np.ndarray, known: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
  """Every unknown pixel takes the label of its nearest known pixel (ties: scipy's choice, deterministic)."""
  known = np.asarray(known, bool)
  done = _empty(label, known)
  if done is not None:
    return done
  _, (rows, cols) = ndimage.distance_transform_edt(~known, return_indices=True)
  return np.where(known, label, label[rows, cols]).astype(label.dtype)


def _grid_edges(h: int, w: int):
  """(a, b, step length) per offset of the 8-connected grid: pixel a and its neighbour b, each pair once."""
  idx = np.arange(h * w).reshape(h, w)
  out = []
  for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
    a = idx[0:h - dy, max(0, -dx):w - max(0, dx)]
    b = idx[dy:h, max(0, dx):w - max(0, -dx)]
    out.append((a.reshape(-1), b.reshape(-1), float(np.hypot(dy, dx))))
  return out


def geodesic_fill(label: np.ndarray, known: np.ndarray, image: np.ndarray) -> np.ndarray:
  """Every unknown pixel takes the label of its geodesically nearest known pixel (image-aware)."""
  known = np.asarray(known, bool)
  done = _empty(label, known)
  if done is not None:
    return done
  h, w = label.shape
  rgb = np.asarray(image, np.float32).reshape(h * w, 3) / 255.0
  srcs, dsts, costs = [], [], []
  for a, b, length in _grid_edges(h, w):
    colour = np.linalg.norm(rgb[a] - rgb[b], axis=1)
    srcs.append(a)
    dsts.append(b)
    costs.append(length * (1.0 + COLOUR_COST * colour) + 1e-6)  # > 0: a zero weight would drop the edge
  graph = coo_matrix((np.concatenate(costs), (np.concatenate(srcs), np.concatenate(dsts))),
                     shape=(h * w, h * w)).tocsr()
  seeds = np.flatnonzero(known.reshape(-1))
  _, _, nearest_seed = dijkstra(graph, directed=False, indices=seeds, min_only=True, return_predecessors=True)
  flat = label.reshape(-1)
  out = np.where(known.reshape(-1), flat, flat[np.maximum(nearest_seed, 0)])
  return out.reshape(h, w).astype(label.dtype)


FILLS: dict[str, Fill] = {
    "nearest": nearest_fill,
    "geodesic": geodesic_fill,
}


def fill_batch(name: str, labels: np.ndarray, known: np.ndarray, images: np.ndarray) -> np.ndarray:
  """`FILLS[name]` over int[B,H,W] labels, bool[B,H,W] known pixels and uint8[B,H,W,3] images."""
  fill = FILLS[name]
  return np.stack([fill(labels[i], known[i], images[i]) for i in range(labels.shape[0])])


def near_known(known: np.ndarray, radius: float) -> np.ndarray:
  """bool[H,W]: pixels within `radius` pixels (Euclidean) of a known pixel (known pixels included)."""
  known = np.asarray(known, bool)
  if not known.any():
    return known.copy()
  return ndimage.distance_transform_edt(~known) <= radius
