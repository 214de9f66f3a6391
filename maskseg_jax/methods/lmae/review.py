"""What a data team reviews after a completion, written beside the completed labels in `OUT/review/`:

  <stem>.png   image | input label (unknown marked) | completed label | the filled pixels on the dimmed image,
               titled, with a legend of the classes present, void and the unknown marker
  <stem>.json  the file's report: pixels filled, method, mean confidence of the filled pixels (the model's
               softmax probability of the class it chose; None for a non-learned fill), routing details
  report.csv   one row per <stem>.json in the folder (rebuilt after every completion into it), sorted by mean
               confidence, least confident first: the files to look at first
"""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

import numpy as np

from maskseg_jax import visualize
from maskseg_jax.data import transforms as T

REVIEW_DIR = "review"
REPORT_CSV = "report.csv"
PREVIEW_SIDE = 320   # longest side of one preview column, pixels (large files are shown smaller)


def confidence_map(acc: np.ndarray, weight: np.ndarray, region: np.ndarray) -> np.ndarray:
  """float32[H,W]: the largest softmax probability of the blended logits `acc / weight` where `region` (the
  pixels the model filled), NaN elsewhere."""
  out = np.full(region.shape, np.nan, np.float32)
  if region.any():
    logits = acc[region] / weight[region][:, None]
    logits = logits - logits.max(-1, keepdims=True)
    p = np.exp(logits)
    out[region] = (p.max(-1) / p.sum(-1)).astype(np.float32)
  return out


def mean_confidence(conf: np.ndarray | None, filled: np.ndarray) -> float | None:
  """Mean of `conf` over the filled pixels that have one (None: no pixel has a confidence, e.g. a fill)."""
  if conf is None:
    return None
  values = conf[filled & np.isfinite(conf)]
  return float(values.mean()) if values.size else None


def default_colors(unknown_value: int = visualize.UNKNOWN, ignore_label: int = visualize.VOID) -> np.ndarray:
  """uint8[256, 3]: the VOC palette with void white and the unknown marker magenta."""
  pal = visualize.palette()
  pal[ignore_label] = visualize.VOID_COLOR
  pal[unknown_value] = visualize.UNKNOWN_COLOR
  return pal


def review_paths(out_dir: str, stem: str) -> tuple[str, str]:
  """(preview PNG, report JSON) of one file."""
  folder = os.path.join(out_dir, REVIEW_DIR)
  return os.path.join(folder, f"{stem}.png"), os.path.join(folder, f"{stem}.json")


def _shown(x: np.ndarray, side: int, label: bool) -> np.ndarray:
  """`x` with its longest side at most `side` (small files enlarged by a whole factor to at least side / 2, so
  titles and pixels stay readable)."""
  h, w = x.shape[:2]
  scale = min(1.0, side / max(h, w))
  if max(h, w) < side // 2:
    scale = float(-(-(side // 2) // max(h, w)))
  if scale == 1.0:
    return x
  size = (max(1, round(h * scale)), max(1, round(w * scale)))
  if label:
    return T.resize(np.zeros(x.shape + (3,), np.uint8), x, size)[1]
  return T.resize(x, None, size)[0]


def legend_of(values: Sequence[int], colors: np.ndarray, names: dict | None, unknown_value: int,
              ignore_label: int) -> list[tuple[str, tuple[int, int, int]]]:
  """Legend entries of the label values present: class names (`names`: id -> name, else the id), then void and
  the unknown marker."""
  names = names or {}
  special = {ignore_label: "void", unknown_value: "unknown"}
  ordered = sorted(values, key=lambda v: (v in special, v))
  return [(special.get(v) or str(names.get(v, f"class {v}")), tuple(int(c) for c in colors[v])) for v in ordered]


def preview(image: np.ndarray, label: np.ndarray, out: np.ndarray, *, colors=None, names: dict | None = None,
            unknown_value: int = visualize.UNKNOWN, ignore_label: int = visualize.VOID,
            side: int = PREVIEW_SIDE) -> np.ndarray:
  """The review picture of one file (uint8 [h, w, 3]): image | input label | completed | filled pixels.

  `colors`: uint8[k, 3] for label values 0..k-1 (the file's own palette or colour codes), over the default
  palette in which void and the unknown marker are `visualize.VOID_COLOR` / `UNKNOWN_COLOR`.
  """
  pal = default_colors(unknown_value, ignore_label)
  if colors is not None:
    given = np.asarray(colors, np.uint8).reshape(-1, 3)[:256]
    pal[:len(given)] = given
  filled = out != label
  img, lab, done, mark = (_shown(image, side, False), _shown(label, side, True), _shown(out, side, True),
                          _shown(filled.astype(np.uint8), side, True).astype(bool))
  dimmed = (img.astype(np.float32) * 0.35).astype(np.uint8)
  highlight = np.where(mark[..., None], visualize.colorize(done, pal), dimmed)
  picture = visualize.grid([[img, visualize.colorize(lab, pal), visualize.colorize(done, pal), highlight]])
  values = np.union1d(np.unique(label), np.unique(out)).tolist()
  legend = legend_of(values, pal, names, unknown_value, ignore_label)
  return visualize.with_legend(picture, legend, titles=("image", "input label", "completed", "filled"))


def write_review(out_dir: str, stem: str, picture: np.ndarray, report: dict) -> tuple[str, str]:
  """Writes `<stem>.png` and `<stem>.json` into `out_dir/review/`; returns their paths."""
  from PIL import Image
  png, js = review_paths(out_dir, stem)
  os.makedirs(os.path.dirname(png), exist_ok=True)
  Image.fromarray(np.asarray(picture, np.uint8)).save(png)
  with open(js, "w") as f:
    json.dump(report, f, indent=1, sort_keys=True)
  return png, js


def write_report_csv(review_dir: str) -> str:
  """`review_dir/report.csv` from every `<stem>.json` there: least confident files first, fills (no
  confidence) after them, then by name."""
  rows = []
  for entry in sorted(os.listdir(review_dir)):
    if entry.endswith(".json"):
      with open(os.path.join(review_dir, entry)) as f:
        rows.append(json.load(f))
  rows.sort(key=lambda r: (r.get("mean_confidence") is None, r.get("mean_confidence") or 0.0, r["name"]))
  columns = ["name", "filled_pixels", "filled_fraction", "method", "mean_confidence"]
  columns += sorted({k for r in rows for k in r} - set(columns))
  path = os.path.join(review_dir, REPORT_CSV)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
  return path
