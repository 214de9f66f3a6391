"""Score the real task: complete val labels broken the way labels break, at native resolution, model vs fills.

  python experiments/lmae_real_holes.py --model=runs/recipe_s0 [--model=runs/recipe_s1 ...] \
      [--methods=model,nearest,geodesic] [--damages=blobs,objects,boundaries] [--limit=N] [--seed=0] \
      [--data_root=../shared/data/camvid] [--split=val] [--min_missing=0,0.5] \
      [--results=experiments/results/lmae_real_holes.md]

Every val label (CamVid: 360x480, read by the project's source at image_scale 1) is damaged by each kind of
`maskseg_jax.label_damage.DAMAGES` (blobs, whole objects, thinned boundaries; the protocol and why patch grids
are not it are in that module's docstring), seeded per (seed, image, kind), with the holes set to unknown (254).
Each method then completes the damaged label through the completion command's own per-pair function
(`completion_methods.pair_completer`, `--missing=unknown`: only the holes are filled, void stays void; the model tiles
the file at its training field of view and fills from bilinear logits at file resolution):
  model    each `--model=RUN` (or `RATIO=RUN,RATIO=RUN2` for one routed set, as `maskseg-complete --model`)
           is its own row, rebuilt from the run's config.json by build_lmae (`auto` rows: the command's
           default, one per `--auto_rule`); with `--min_missing=0,F`
           also a row `model@F:RUN` per value (the command's `--min_missing`: only patches at least F
           missing are masked, the others pre-filled by the geodesic fill);
  fills    every `fills.FILLS` entry (nearest, geodesic), no model.
Scores, per damage kind and method, over the hole pixels only (the truth is known there; given pixels are
never changed, which the command checks): mIoU (classes with zero union left out), pixel accuracy and per-class
IoU, one confusion matrix over all images; for model rows the mean fraction of patches the holes forced masked
(scattered holes touch many patches: above the run's training ratio the model is out of its training
distribution); plus the margin of each model row over the best fill (by mIoU;
`margin_pixel_acc` against the best fill by pixel accuracy) and, with several model rows, their mean.
Output: markdown tables on stdout, `--results=PATH.md` (command on top) and JSON (`--json`, default
PATH.json beside the results). `--tiny`: 4 images, a smoke test (the numbers mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmae_ablations as abl  # noqa: E402  (config loading, --set parsing, XLA cache)

TINY_LIMIT = 4


# --- data -------------------------------------------------------------------------------------------------
def val_source(args):
  """The dataset's val split at native resolution, via the project's config and sources."""
  from maskseg_jax.data import sources
  overrides = {**abl.parse_sets(args.set), "data.image_scale": 1.0}
  if args.data_root:
    overrides["data.root"] = os.path.abspath(args.data_root)
  config = abl.load_config(args.config, args.config_arg or None, overrides)
  return sources.build_source(config.data, args.split)


def damage_params(args) -> dict:
  """Per kind, the protocol's parameters with the command-line changes."""
  from maskseg_jax.methods.lmae import label_damage as D
  params = {k: dict(v) for k, v in D.DEFAULTS.items()}
  for key, value in abl.parse_sets(args.damage_set).items():
    kind, _, name = key.partition(".")
    if kind not in params or name not in params[kind]:
      raise SystemExit(f"--damage_set {key}: expected KIND.PARAM with KIND.PARAM one of "
                       f"{[f'{k}.{p}' for k, v in D.DEFAULTS.items() for p in v]}")
    params[kind][name] = value
  return params


# --- scores -----------------------------------------------------------------------------------------------
def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
  """int64[n, n+1] (truth, prediction) counts; the last column is any prediction that is no class (a miss)."""
  t = truth.astype(np.int64).reshape(-1)
  p = np.where(pred < n, pred, n).astype(np.int64).reshape(-1)
  return np.bincount(t * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)


def scores(conf: np.ndarray, class_names) -> dict:
  """mIoU over classes with non-zero union, pixel accuracy, per-class IoU (None: zero union)."""
  n = conf.shape[0]
  inter = np.diag(conf[:, :n]).astype(np.float64)
  union = conf.sum(1) + conf[:, :n].sum(0) - inter
  iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
  return {"miou": float(np.nanmean(iou)) if np.any(union > 0) else 0.0,
          "pixel_acc": float(inter.sum() / max(conf.sum(), 1)), "hole_pixels": int(conf.sum()),
          "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)}}


def add_margins(rows: dict, fills: list[str], models: list[str]) -> dict:
  """Per model row: margin over the best fill (mIoU and pixel accuracy, each against its best); with several
  runs of one kind also their mean as 'model_mean' / 'hybrid_mean'."""
  if not fills:
    return rows
  best_miou = max(fills, key=lambda m: rows[m]["miou"])
  best_acc = max(fills, key=lambda m: rows[m]["pixel_acc"])
  for m in models:
    rows[m]["best_fill"] = best_miou
    rows[m]["margin_miou"] = rows[m]["miou"] - rows[best_miou]["miou"]
    rows[m]["margin_pixel_acc"] = rows[m]["pixel_acc"] - rows[best_acc]["pixel_acc"]
  kind_of = lambda m: m.partition(":")[0] if ":" in m else "model"  # noqa: E731  (model:RUN, hybrid:RUN rows)
  for kind in dict.fromkeys(map(kind_of, models)):
    runs = [m for m in models if kind_of(m) == kind]
    if len(runs) > 1:
      rows[f"{kind}_mean"] = {k: float(np.mean([rows[m][k] for m in runs]))
                              for k in ("miou", "pixel_acc", "margin_miou", "margin_pixel_acc")}
      rows[f"{kind}_mean"]["half_range_miou"] = float(np.ptp([rows[m]["miou"] for m in runs]) / 2)
  return rows


# --- methods ----------------------------------------------------------------------------------------------
def model_name(spec: str) -> str:
  return "model:" + "+".join(os.path.basename(os.path.normpath(s.rpartition("=")[2])) for s in spec.split(","))


def min_missing_values(args) -> list[float]:
  try:
    values = [float(v) for v in str(args.min_missing).split(",") if v.strip()]
  except ValueError:
    values = []
  if not values or any(not 0.0 <= v <= 1.0 for v in values):
    raise SystemExit(f"--min_missing={args.min_missing}; expected comma-separated fractions in [0, 1]")
  return values


def auto_rule(text: str):
  """'thin_px=8,edge_ratio=1.5' -> a hole_routes.HoleRule (unset fields keep their defaults)."""
  import dataclasses
  from maskseg_jax.methods.lmae import hole_routes
  fields = {f.name for f in dataclasses.fields(hole_routes.HoleRule)}
  values = {}
  for item in filter(None, text.split(",")):
    key, _, value = item.partition("=")
    if key not in fields:
      raise SystemExit(f"--auto_rule {text}: {key!r} is not a HoleRule field; expected some of {sorted(fields)}")
    values[key] = float(value)
  return hole_routes.HoleRule(**values)


def build_methods(args, num_classes: int) -> dict:
  """name -> per-pair completion function (completion_methods.pair_completer), models first, then fills."""
  from maskseg_jax.methods.lmae import completion_methods, runs
  from maskseg_jax.methods.lmae import fills
  wanted = [m for m in args.methods.split(",") if m]
  unknown = [m for m in wanted if m not in completion_methods.METHODS]
  if unknown:
    raise SystemExit(f"--methods {unknown} unknown; expected some of {completion_methods.METHODS}")
  out = {}
  model_methods = [m for m in completion_methods.MODEL_METHODS if m in wanted]
  for spec in args.model if model_methods else ():
    completers = runs.resolve_models(spec.split(","), args.checkpoint, print, abl.parse_sets(args.model_set))
    if completers[0].num_classes != num_classes:
      raise SystemExit(f"--model={spec} predicts {completers[0].num_classes} classes; the data has "
                       f"{num_classes}")
    for method in model_methods:  # model:RUN, hybrid:RUN; model@F:RUN with --min_missing F > 0; auto:RUN
      if method == "auto":
        for text in args.auto_rule or [""]:
          rule = auto_rule(text)
          name = model_name(spec).replace("model", f"auto[{text}]" if text else "auto", 1)
          out[name] = completion_methods.pair_completer("auto", completers, missing="unknown", scale=args.scale,
                                                rule=rule)
        continue
      for f in min_missing_values(args):
        kind = method if f == 0 else f"{method}@{f:g}"
        name = model_name(spec).replace("model", kind, 1)
        name = name if name not in out else f"{name}#{len(out) + 1}"  # two runs in folders of one name
        out[name] = completion_methods.pair_completer(method, completers, missing="unknown", scale=args.scale,
                                              min_missing=f)
  for m in wanted:
    if m in fills.FILLS:
      out[m] = completion_methods.pair_completer(m, missing="unknown", num_classes=num_classes)
  return out


def evaluate(source, methods: dict, kinds: list[str], params: dict, *, seed: int, limit: int) -> dict:
  """Damages every item, completes it with every method and accumulates hole confusions and timings."""
  from maskseg_jax.methods.lmae import label_damage as D
  n = int(source.num_classes)
  conf = {k: {m: np.zeros((n, n + 1), np.int64) for m in methods} for k in kinds}
  seconds = {k: {m: 0.0 for m in methods} for k in kinds}
  masked = {k: {m: [] for m in methods} for k in kinds}  # model rows: fraction of patches masked per file
  labelled = {k: 0 for k in kinds}
  count = len(source) if limit <= 0 else min(limit, len(source))
  for i in range(count):
    item = source[i]
    truth = item["label"]
    for k in kinds:
      damaged = D.damage(k, truth, seed=seed, image_id=item["id"], **params[k])
      hole = D.holes(damaged, truth)
      labelled[k] += int(D.class_pixels(truth).sum())
      for m, run in methods.items():
        t = time.perf_counter()
        out, fields = run(item["image"], damaged, name=item["id"])
        seconds[k][m] += time.perf_counter() - t
        if fields.get("masked_fraction") is not None:
          masked[k][m].append(fields["masked_fraction"])
        conf[k][m] += confusion(truth[hole], out[hole], n)
  return {"images": count, "conf": conf, "seconds": seconds, "labelled": labelled, "masked": masked}


def summarize(raw: dict, methods: list[str], class_names) -> dict:
  from maskseg_jax.methods.lmae import fills
  fill_names = [m for m in methods if m in fills.FILLS]
  models = [m for m in methods if m not in fills.FILLS]
  out = {}
  for k, confs in raw["conf"].items():
    rows = {m: {**scores(c, class_names), "s_per_image": raw["seconds"][k][m] / max(raw["images"], 1)}
            for m, c in confs.items()}
    for m, fractions in raw["masked"][k].items():
      if fractions:
        rows[m]["masked_fraction"] = float(np.mean(fractions))
    holes = next(iter(rows.values()))["hole_pixels"] if rows else 0
    out[k] = {"hole_fraction": holes / max(raw["labelled"][k], 1), "methods": add_margins(rows, fill_names, models)}
  return out


def _pct(v) -> str:
  return "-" if v is None else f"{100 * v:.1f}"


def _signed(v) -> str:
  return "-" if v is None else f"{100 * v:+.1f}"


def tables(result: dict, class_names) -> str:
  head = ["damage", "holes % of labelled", "method", "holes mIoU", "holes pixel acc", "margin mIoU vs best fill",
          "margin pixel acc", "patches masked %", "s / image"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for k, r in result.items():
    for m, s in r["methods"].items():
      cells = [k, f"{100 * r['hole_fraction']:.1f}", m, _pct(s["miou"]), _pct(s["pixel_acc"]),
               _signed(s.get("margin_miou")), _signed(s.get("margin_pixel_acc")), _pct(s.get("masked_fraction")),
               f"{s['s_per_image']:.2f}" if "s_per_image" in s else "-"]
      if m.endswith("_mean"):
        cells[3] += f" ± {100 * s['half_range_miou']:.1f}"
      lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Per-class IoU over the holes (%; - = class absent from truth and prediction):", ""]
  head = ["damage", "method", *class_names]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for k, r in result.items():
    for m, s in r["methods"].items():
      if "iou" in s:
        lines.append("| " + " | ".join([k, m] + [_pct(s["iou"][c]) for c in class_names]) + " |")
  return "\n".join(lines)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", action="append", default=[], metavar="RUN",
                  help="trained L-MAE run folder (RATIO=RUN; comma-join for one routed set); repeat for rows")
  ap.add_argument("--methods", default="model,nearest,geodesic")
  ap.add_argument("--damages", default="blobs,objects,boundaries")
  ap.add_argument("--damage_set", action="append", default=[], metavar="KIND.PARAM=VALUE",
                  help="change a protocol parameter, e.g. blobs.fraction=0.5, boundaries.width=2")
  ap.add_argument("--seed", type=int, default=0, help="damage seed (each image and kind draws its own stream)")
  ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
  ap.add_argument("--config", default="lmae", help="config whose data section names the dataset")
  ap.add_argument("--config_arg", default="camvid,cpu")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="data config override")
  ap.add_argument("--data_root", default="", help="dataset root (default: the config's; CamVid: "
                  "../shared/data/camvid)")
  ap.add_argument("--split", default="val")
  ap.add_argument("--scale", default="train", help="completion --scale for the model (train|fit)")
  ap.add_argument("--min_missing", default="0", help="completion --min_missing for model/hybrid rows, comma "
                  "list: one row per value (F > 0 rows are named model@F:RUN)")
  ap.add_argument("--auto_rule", action="append", default=[], metavar="thin_px=P,edge_ratio=R",
                  help="auto rows: one per rule (default: the command's rule, hole_routes.HoleRule)")
  ap.add_argument("--model_set", action="append", default=[], metavar="lmae.KEY=VALUE",
                  help="evaluation-time setting replacing the runs' own (e.g. lmae.progressive_reveal=())")
  ap.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
  ap.add_argument("--tiny", action="store_true", help=f"smoke test: {TINY_LIMIT} images")
  ap.add_argument("--results", default="", help="write the markdown (command on top) to this file")
  ap.add_argument("--json", default="", help="write the JSON here (default: --results with .json)")
  abl.add_xla_cache_flag(ap)
  args = ap.parse_args(argv)
  abl.setup_jax(args.xla_cache)
  from maskseg_jax.methods.lmae import label_damage as D

  start = time.perf_counter()
  kinds = [k for k in args.damages.split(",") if k]
  bad = [k for k in kinds if k not in D.DAMAGES]
  if bad:
    raise SystemExit(f"--damages {bad} unknown; expected some of {tuple(D.DAMAGES)}")
  limit = args.limit or (TINY_LIMIT if args.tiny else 0)
  source = val_source(args)
  class_names = list(source.class_names)
  methods = build_methods(args, int(source.num_classes))
  if not methods:
    raise SystemExit("nothing to run: --methods=model needs --model=RUN; or add a fill (nearest, geodesic)")
  params = damage_params(args)
  raw = evaluate(source, methods, kinds, params, seed=args.seed, limit=limit)
  result = summarize(raw, list(methods), class_names)
  markdown = tables(result, class_names)
  command = abl.command_line("lmae_real_holes.py", argv)
  report = {"command": command, "images": raw["images"], "split": args.split, "seed": args.seed,
            "damages": {k: params[k] for k in kinds}, "models": args.model, "results": result,
            "seconds": time.perf_counter() - start, "markdown": markdown}
  print(markdown)
  json_path = args.json or (os.path.splitext(args.results)[0] + ".json" if args.results else "")
  if args.results:
    abl.write_markdown(args.results, f"L-MAE on realistic holes (native resolution, {raw['images']} {args.split} "
                       "images)", command, markdown)
  if json_path:
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
      json.dump(report, f, indent=1)
  return report


if __name__ == "__main__":
  main()
