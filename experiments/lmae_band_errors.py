"""Why the nearest fill is hard to beat on thin boundary bands: where it errs, and whether the model helps there.

  python experiments/lmae_band_errors.py --model=runs/dev/recipe_s0 --config_arg=camvid,recipe,dev \
      --split=train@dev [--taus=0,0.5,0.7,0.9] [--rims=3,6,10] [--limit=N]

Each label of the split is damaged by `label_damage.boundaries` (the real-holes protocol, seed 0) and filled
by the nearest fill and by the model alone (`--method=model`, exact masking). Printed as JSON:
  vanished_share  the share of the nearest fill's wrong pixels whose true class has no given pixel within
                  `--vanish_px` of them: structures the band removed whole, which no copy of the rim restores;
  gate rows       the nearest fill with the model's label taken where the model is at least tau sure and gives
                  a class no given pixel within r holds (a vanished structure the model claims to see).
Holes mIoU / pixel accuracy over the band pixels, as experiments/lmae_real_holes.py scores them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmae_real_holes as holes_eval  # noqa: E402  (source at native resolution, confusion, scores)


def far_from_class(pred: np.ndarray, label: np.ndarray, known: np.ndarray, where: np.ndarray, r: float):
  """bool[H,W]: pixels of `where` whose class in `pred` has no known pixel of `label` within r."""
  out = np.zeros(where.shape, bool)
  for c in np.unique(pred[where]):
    given = known & (label == c)
    dist = ndimage.distance_transform_edt(~given) if given.any() else np.full(where.shape, np.inf)
    out |= where & (pred == c) & (dist > r)
  return out


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", required=True)
  ap.add_argument("--config", default="configs/lmae.py")
  ap.add_argument("--config_arg", default="camvid,recipe,dev")
  ap.add_argument("--split", default="train@dev")
  ap.add_argument("--data_root", default="")
  ap.add_argument("--set", action="append", default=[])
  ap.add_argument("--model_set", action="append", default=["lmae.progressive_reveal=()"])
  ap.add_argument("--taus", default="0,0.5,0.7,0.9")
  ap.add_argument("--rims", default="3,6,10")
  ap.add_argument("--vanish_px", type=float, default=6.0)
  ap.add_argument("--limit", type=int, default=0)
  args = ap.parse_args(argv)
  from maskseg_jax.methods.lmae import completion_methods, fills, label_damage as D, runs
  source = holes_eval.val_source(args)
  n, names = int(source.num_classes), list(source.class_names)
  sets = holes_eval.abl.parse_sets(args.model_set)
  model = completion_methods.pair_completer("model", runs.resolve_models([args.model], "latest", print, sets),
                                            missing="unknown")
  taus, rims = [float(t) for t in args.taus.split(",")], [float(r) for r in args.rims.split(",")]
  gates = [(t, r) for t in taus for r in rims]
  conf = {k: np.zeros((n, n + 1), np.int64) for k in ["nearest", "model"] + gates}
  wrong = vanished = 0
  count = len(source) if args.limit <= 0 else min(args.limit, len(source))
  for i in range(count):
    item = source[i]
    truth = item["label"]
    damaged = D.damage("boundaries", truth, seed=0, image_id=item["id"])
    hole, known = D.holes(damaged, truth), D.class_pixels(damaged)
    nearest = fills.nearest_fill(damaged, known, item["image"])
    out, fields = model(item["image"], damaged, name=item["id"])
    sure = np.nan_to_num(fields["confidence_map"], nan=0.0)
    miss = hole & (nearest != truth)
    wrong += int(miss.sum())
    vanished += int(far_from_class(truth, damaged, known, miss, args.vanish_px).sum())
    conf["nearest"] += holes_eval.confusion(truth[hole], nearest[hole], n)
    conf["model"] += holes_eval.confusion(truth[hole], out[hole], n)
    for r in rims:
      novel = far_from_class(out, damaged, known, hole, r)
      for t in taus:
        pred = np.where(novel & (sure >= t), out, nearest)
        conf[(t, r)] += holes_eval.confusion(truth[hole], pred[hole], n)
  rows = {}
  for key, c in conf.items():
    s = holes_eval.scores(c, names)
    name = key if isinstance(key, str) else f"gate tau={key[0]:g} r={key[1]:g}"
    rows[name] = {"miou": round(100 * s["miou"], 2), "pixel_acc": round(100 * s["pixel_acc"], 2),
                  "pole": round(100 * (s["iou"].get("pole") or 0.0), 1)}
  result = {"images": count, "split": args.split, "model": args.model,
            "nearest_wrong_share": round(wrong / max(int(conf["nearest"].sum()), 1), 3),
            "vanished_share": round(vanished / max(wrong, 1), 3), "rows": rows}
  print(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
