"""L-MAE label augmentation (paper IV-C, Table V) at CPU scale: segmenters trained on degraded vs completed labels.

  python experiments/label_augmentation.py --workdir=runs/label_aug --lmae_root=runs/lmae_ablations \
      --lmae_steps=600 --ratios=0.5,0.6,0.75 --seg_steps=600 [--models=fcn,unet] [--seeds=2] \
      [--labels=degraded,nearest,completed,full] [--results=experiments/results/label_augmentation.md]
  python experiments/label_augmentation.py --workdir=runs/label_aug_recipe --lmae_run=runs/recipe_s0 \
      [--min_missing=0.5] ...

1. Degrade: every training label of the dataset (CamVid train) is written, with its image copied unchanged, to
   the new folder dataset `<workdir>/data/degraded/{images,labels}/` (`folder` layout, native resolution): in
   each label a random 50% of its foreground-bearing tiles (`inference.degrade_label`, seeded per image)
   are set to `--degrade_to`. Tiles are `--degrade_patch` pixels at the training image scale (16 px at CamVid's
   0.25 = 64 px in the files), so training sees the spec's 16x16 protocol. CamVid has no background class, so
   by default degraded tiles become void (255): the label is missing there, and L-MAE completion (which fills
   void first) has something to fill. `--degrade_to=<class id>` gives the paper's wrong-background variant.
   The source dataset is only read.
2. L-MAE runs: `--lmae_run=RUN` (repeatable, `RATIO=RUN` as `maskseg-complete --model`) uses trained runs as
   they are (e.g. the CamVid recipe's); otherwise runs at `--ratios` (full training labels) are trained or
   reused from experiments/lmae_ablations.py's variants in `--lmae_root` (pass that script's workdir and
   --steps to reuse its baseline (0.5) and ratio runs).
3. Complete: `label_folder.complete_folder` with the models (routing, default `--missing=unknown_and_void`: the
   degraded void tiles are filled) writes `<workdir>/data/completed/labels/`; each non-learned fill arm
   (`nearest`, `geodesic`: `maskseg_jax.methods.lmae.fills`, no model, same missing pixels) writes
   `<workdir>/data/<fill>/labels/` (images/ link to the degraded images). With `--degrade_to=<class id>` the
   fills have no hole to see (they fill void only); the model's Background-First routing still does.
4. Segment: each of `--models` (`configs/supervised.py:<dataset>,<model>`, camvid: `camvid,cpu,<model>`) trained with the same
   steps on each of `--labels` (`full` = the original labels, the ceiling), once per segmenter seed
   (`--seeds=N`: config seeds 0..N-1), and scored on the real val split (`data.val_name`: the folder trains,
   the dataset's own reader validates).
5. Report: val mIoU per model and label set (mean over seeds ± half their range), plus how good the training
   labels are against the truth (mIoU and pixel accuracy over truth-labelled pixels, a void pixel counting as
   wrong) and what each completion changed. The question it answers: does L-MAE completion beat simply
   filling the holes with the nearest label, as training data?
Runs are cached like the ablations (`ablation.json` per run), so a rerun only prints the table. `--tiny`:
a handful of CamVid images at 1/8 scale (or `--dataset=synthetic` 32 px scenes), a few steps; the numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmae_ablations as abl  # noqa: E402  (variant configs, cached training, config loading)

LABEL_SETS = ("degraded", "nearest", "geodesic", "completed", "full")
DEFAULT_LABELS = ("degraded", "nearest", "completed", "full")
COMPLETED = "completed"  # the L-MAE arm; every other completed arm is a fill named by its fills.FILLS key
DEGRADE_FILE = "degrade.json"
STAMP_FILE = "training_labels.json"
COMPLETE_FILE = "completion.json"

TINY_CAMVID = {"data.train_split": "train[:16]", "data.val_split": "val[:8]", "data.image_scale": 0.125,
               "data.batch_size": 8, "data.eval_batch_size": 8, "data.validate_items": 4, "train.num_images": 1}
TINY_SEG = {"camvid": {**TINY_CAMVID, "data.crop_size": (32, 48), "data.eval_size": (48, 64), "model.width": 0.125},
            "synthetic": {"data.synthetic.num_train": 8, "data.synthetic.num_val": 8,
                          "data.synthetic.image_size": (32, 32), "data.crop_size": (32, 32),
                          "data.eval_size": (32, 32), "data.batch_size": 8, "data.eval_batch_size": 8,
                          "model.width": 0.125, "data.validate_items": 4, "train.num_images": 1}}


# --- data -------------------------------------------------------------------------------------------------
def native_data_config(data_config):
  """The data config at the files' own resolution (image_scale 1), to read and write whole labels."""
  import ml_collections
  dc = ml_collections.ConfigDict(data_config.to_dict())
  dc.image_scale = 1.0
  return dc


def image_file(source, index: int) -> str | None:
  """The image path behind item `index` of a file-backed source (through subsets), else None."""
  from maskseg_jax.data import sources
  while isinstance(source, sources.SubsetSource):
    source, index = source.source, source.indices[index]
  return source.items[index][0] if isinstance(source, sources.FileSource) else None


def write_degraded(source, out_dir: str, *, patch: int, fraction: float, to: int, seed: int) -> dict:
  """`out_dir/{images,labels}` from `source` with degraded labels; images copied byte for byte (or PNG)."""
  from PIL import Image
  from maskseg_jax.methods.lmae import inference as inf
  settings = {"items": len(source), "patch": patch, "fraction": fraction, "to": to, "seed": seed}
  record = os.path.join(out_dir, DEGRADE_FILE)
  if os.path.isfile(record):
    with open(record) as f:
      if json.load(f)["settings"] == settings:
        return settings
  if os.path.isdir(out_dir):
    shutil.rmtree(out_dir)  # a partial or differently degraded copy made by this script
  os.makedirs(os.path.join(out_dir, "images"))
  os.makedirs(os.path.join(out_dir, "labels"))
  for i in range(len(source)):
    item = source[i]
    path = image_file(source, i)
    if path is not None:
      shutil.copyfile(path, os.path.join(out_dir, "images", item["id"] + os.path.splitext(path)[1].lower()))
    else:
      Image.fromarray(item["image"]).save(os.path.join(out_dir, "images", item["id"] + ".png"))
    rng = np.random.default_rng([seed, zlib.crc32(item["id"].encode())])
    label = inf.degrade_label(item["label"], rng, patch=patch, fraction=fraction, background=to)
    Image.fromarray(label.astype(np.uint8)).save(os.path.join(out_dir, "labels", item["id"] + ".png"))
  with open(record, "w") as f:
    json.dump({"settings": settings}, f)
  return settings


def complete_degraded(degraded: str, out_dir: str, models: list[str], degrade: dict, *,
                      method: str = "model", min_missing: float = 0.0, num_classes: int | None = None) -> dict:
  """Completion of the degraded labels (L-MAE `models`, or the fill `method`) into `out_dir/labels` (+ `images`
  linking to the degraded ones); reused while the method, models, `min_missing` (the command's) and degradation
  settings are the same."""
  from maskseg_jax.methods.lmae import label_folder
  record = os.path.join(out_dir, COMPLETE_FILE)
  if os.path.isfile(record):
    with open(record) as f:
      saved = json.load(f)
    if ((saved.get("method", "model"), saved["models"], saved["degrade"], saved.get("min_missing", 0.0))
        == (method, models, degrade, min_missing)):
      return saved
  if os.path.isdir(out_dir):
    shutil.rmtree(out_dir)
  os.makedirs(out_dir)
  os.symlink(os.path.join("..", os.path.basename(degraded), "images"), os.path.join(out_dir, "images"))
  lines = []
  t = time.perf_counter()
  reports = label_folder.complete_folder(os.path.join(degraded, "images"), os.path.join(degraded, "labels"),
                                     os.path.join(out_dir, "labels"), models, method=method,
                                     min_missing=min_missing, num_classes=num_classes, write_review=False,
                                     log=lines.append)  # a training label folder: no review files in it
  routed = {}
  for r in reports:
    if r.ratio is not None:
      routed[f"{r.ratio:g}"] = routed.get(f"{r.ratio:g}", 0) + 1
  saved = {"method": method, "models": models, "degrade": degrade, "min_missing": min_missing,
           "files": len(reports),
           "changed_pixels": sum(r.changed_pixels for r in reports),
           "routed_to_ratio": routed, "seconds": time.perf_counter() - t}
  with open(os.path.join(out_dir, "completion.log"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(record, "w") as f:
    json.dump(saved, f, indent=1)
  return saved


def label_quality(source, folders: dict, num_classes: int) -> dict:
  """Each folder's labels against the truth in `source` (native size): mIoU and pixel accuracy over
  truth-labelled pixels (a void label there counts as a miss) and void fraction; "full" is the truth itself."""
  from maskseg_jax.data.sources import read_label
  n = num_classes
  conf = {k: np.zeros((n, n + 1), np.int64) for k in folders}  # last column: any non-class label
  void = {k: 0 for k in folders}
  total = truth_void = 0
  for i in range(len(source)):
    item = source[i]
    truth = item["label"]
    total += truth.size
    counted = truth < n
    truth_void += int((~counted).sum())
    for k, folder in folders.items():
      label = read_label(os.path.join(folder, item["id"] + ".png"))
      void[k] += int((label >= n).sum())
      pred = np.where(label < n, label, n).astype(np.int64)
      conf[k] += np.bincount(truth[counted].astype(np.int64) * (n + 1) + pred[counted],
                             minlength=n * (n + 1)).reshape(n, n + 1)
  out = {"full": {"miou": 1.0, "pixel_acc": 1.0, "void_fraction": truth_void / max(total, 1)}}
  for k, c in conf.items():
    inter = np.diag(c[:, :n]).astype(np.float64)
    union = c.sum(1) + c[:, :n].sum(0) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    out[k] = {"miou": float(np.nanmean(iou)), "pixel_acc": float(inter.sum() / max(c.sum(), 1)),
              "void_fraction": void[k] / max(total, 1), "iou": [None if np.isnan(v) else float(v) for v in iou]}
  return out


def changed_accuracy(source, before: str, after: str, num_classes: int) -> dict:
  """Pixels completion changed (count, fraction of all), how many have a true class, and how many of those
  are now correct."""
  from maskseg_jax.data.sources import read_label
  changed = with_truth = correct = total = 0
  for i in range(len(source)):
    item = source[i]
    a = read_label(os.path.join(before, item["id"] + ".png"))
    b = read_label(os.path.join(after, item["id"] + ".png"))
    diff = a != b
    total += diff.size
    known = diff & (item["label"] < num_classes)
    changed += int(diff.sum())
    with_truth += int(known.sum())
    correct += int((b[known] == item["label"][known]).sum())
  return {"changed_pixels": changed, "changed_fraction": changed / max(total, 1),
          "changed_with_true_class": with_truth, "changed_correct_fraction": correct / max(with_truth, 1)}


def lmae_specs(args, ratios, lmae_root: str, lmae_runs: dict) -> list[str]:
  """Completion model specs: the given `--lmae_run`s as they are, else runs at `ratios` trained or reused in
  `lmae_root` (recorded in `lmae_runs`)."""
  if args.lmae_run:
    for spec in args.lmae_run:
      lmae_runs[spec] = {"run": spec, "reused": True}
    return [os.path.abspath(s) if "=" not in s else s.partition("=")[0] + "=" + os.path.abspath(s.partition("=")[2])
            for s in args.lmae_run]
  specs = []
  for r in ratios:
    workdir = os.path.join(lmae_root, abl.ratio_variant(r))
    lmae_runs[f"{r:g}"] = abl.train_variant(lmae_config(args, r), workdir)
    specs.append(f"{r:g}={os.path.abspath(workdir)}")
  return specs


# --- configs ----------------------------------------------------------------------------------------------
def lmae_config(args, ratio: float):
  """The ablation script's config of this ratio (so its finished runs are reused as they are)."""
  return abl.variant_config(abl.ratio_variant(ratio), args.dataset, args.lmae_steps, tiny=args.tiny,
                            extra=abl.parse_sets(args.lmae_set))


def seg_config(args, model: str, labels: str, folders: dict, seed: int = 0):
  name, arg = ("supervised", f"camvid,cpu,{model}") if args.dataset == "camvid" else ("supervised", f"synthetic,{model}")
  o = {"seed": seed, "train.steps": args.seg_steps, "train.eval_every": args.seg_steps, "train.checkpoint_every": args.seg_steps,
       "train.log_every": max(1, min(50, args.seg_steps))}
  if args.tiny:
    o.update(TINY_SEG[args.dataset])
  sets = abl.parse_sets(args.seg_set)
  o.update(sets)
  o["seed"] = int(sets.get("seed", 0)) + seed  # --seg_set seed=S: the arm's seeds are S, S+1, ...
  base = abl.load_config(name, arg, o)
  if labels == "full":
    return base
  return abl.load_config(name, arg, {**o, "data.name": "folder", "data.root": os.path.abspath(folders[labels]),
                                     "data.train_split": "train", "data.val_name": base.data.name,
                                     "data.val_root": base.data.root})


def train_arm(config, workdir: str, stamp: dict) -> dict:
  """`abl.train_variant`, but a run trained on other labels (the same folder path, rewritten by a new
  degradation or completion) is removed first: its cache key (the config) cannot see the folder's content."""
  path = os.path.join(workdir, STAMP_FILE)
  if os.path.isdir(workdir):
    saved = None
    if os.path.isfile(path):
      with open(path) as f:
        saved = json.load(f)
    if saved != stamp:
      shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    json.dump(stamp, f)
  return abl.train_variant(config, workdir)


def seeds_summary(runs: list[dict]) -> dict:
  """The seeds' runs of one (model, labels) arm with the mean and half-range of their val mIoU."""
  vals = [r["scalars"]["val/miou"] for r in runs if "val/miou" in r["scalars"]]
  return {"runs": runs, "val_miou": vals, "mean": float(np.mean(vals)) if vals else None,
          "half_range": float(np.ptp(vals) / 2) if vals else None}


def _mean_cell(s: dict | None) -> str:
  if not s or s["mean"] is None:
    return "-"
  return f"{100 * s['mean']:.1f}" + (f" ± {100 * s['half_range']:.1f}" if len(s["val_miou"]) > 1 else "")


def completion_line(labels: str, c: dict) -> str:
  what = "L-MAE completion" if labels == COMPLETED else f"{labels} fill"
  routed = f"; files routed to mask ratio: {c['routed_to_ratio']}" if c.get("routed_to_ratio") else ""
  return (f"{what}: {c['files']} labels, {c['changed_pixels']} pixels changed "
          f"({100 * c['changed_fraction']:.1f}% of all training pixels); {c['changed_with_true_class']} of "
          f"them have a true class, {100 * c['changed_correct_fraction']:.1f}% of those now correct{routed}.")


def table(seg: dict, quality: dict, models, label_sets, completions: dict, seeds: int = 1) -> str:
  names = {"fcn": "FCN", "unet": "U-Net", "deeplabv3plus": "DeepLabV3+"}
  spread = f" ({seeds} seeds, ± half-range)" if seeds > 1 else ""
  head = (["training labels"] + [f"{names.get(m, m)} val mIoU{spread}" for m in models]
          + ["labels mIoU vs truth", "labels pixel acc", "labels void %"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for labels in label_sets:
    cells = [labels] + [_mean_cell(seg.get(f"{m}_{labels}")) for m in models]
    q = quality.get(labels)
    cells += ([f"{100 * q['miou']:.1f}", f"{100 * q['pixel_acc']:.1f}", f"{100 * q['void_fraction']:.1f}"]
              if q else ["-", "-", "-"])
    lines.append("| " + " | ".join(cells) + " |")
  if completions:
    lines.append("")
    lines += [completion_line(k, c) for k, c in completions.items()]
  return "\n".join(lines)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--lmae_root", default="", help="workdir of lmae_ablations.py runs to reuse (default: "
                  "<workdir>/lmae)")
  ap.add_argument("--lmae_run", action="append", default=[], metavar="RUN",
                  help="trained L-MAE run folder to complete with (RATIO=RUN; repeatable, one per ratio); "
                       "replaces training at --ratios")
  ap.add_argument("--lmae_steps", type=int, default=600)
  ap.add_argument("--ratios", default="0.5,0.6,0.75")
  ap.add_argument("--seg_steps", type=int, default=600)
  ap.add_argument("--models", default="fcn,unet")
  ap.add_argument("--labels", default=",".join(DEFAULT_LABELS), help=f"some of {','.join(LABEL_SETS)}")
  ap.add_argument("--seeds", type=int, default=2,
                  help="segmenter seeds per arm (config seeds 0..N-1, from S with --seg_set seed=S)")
  ap.add_argument("--dataset", default="camvid", choices=("camvid", "synthetic"))
  ap.add_argument("--seed", type=int, default=0, help="degradation seed")
  ap.add_argument("--degrade_patch", type=int, default=16, help="tile size in pixels at the training image scale")
  ap.add_argument("--degrade_fraction", type=float, default=0.5)
  ap.add_argument("--degrade_to", default="void", help="'void' (255) or a class id")
  ap.add_argument("--lmae_set", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--min_missing", type=float, default=0.0, help="the completion command's --min_missing for "
                  "the L-MAE arm (0: every patch holding a missing pixel is masked)")
  ap.add_argument("--seg_set", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--tiny", action="store_true", help="minuscule smoke-test scale")
  ap.add_argument("--results", default="", help="also write the markdown (command on top) to this file")
  abl.add_xla_cache_flag(ap)
  args = ap.parse_args(argv)
  abl.setup_jax(args.xla_cache)
  from maskseg_jax.data import sources

  start = time.perf_counter()
  models = [m for m in args.models.split(",") if m]
  label_sets = [s for s in args.labels.split(",") if s]
  unknown = [s for s in label_sets if s not in LABEL_SETS]
  if unknown:
    raise SystemExit(f"--labels {unknown} unknown; expected some of {LABEL_SETS}")
  ratios = [float(r) for r in args.ratios.split(",") if r]
  lmae_root = args.lmae_root or os.path.join(args.workdir, "lmae")
  data_dir = os.path.join(args.workdir, "data")
  folders = {k: os.path.join(data_dir, k) for k in LABEL_SETS if k != "full"}

  # 1. degraded training labels (the dataset itself is only read)
  ref = seg_config(args, models[0], "full", folders)
  dc = native_data_config(ref.data)
  train_src = sources.build_source(dc, dc.train_split)
  scale = float(ref.data.image_scale)
  patch = max(1, round(args.degrade_patch / scale))
  to = 255 if args.degrade_to == "void" else int(args.degrade_to)
  degrade = write_degraded(train_src, folders["degraded"], patch=patch, fraction=args.degrade_fraction, to=to,
                           seed=args.seed)

  # 2. L-MAE completion models, 3. completion (the model and the fill arms)
  lmae_runs, completions = {}, {}
  for labels in (s for s in label_sets if s not in ("degraded", "full")):
    if labels == COMPLETED:
      specs = lmae_specs(args, ratios, lmae_root, lmae_runs)
      c = complete_degraded(folders["degraded"], folders[labels], specs, degrade, min_missing=args.min_missing)
    else:
      c = complete_degraded(folders["degraded"], folders[labels], [], degrade, method=labels,
                            num_classes=int(dc.num_classes))
    c.update(changed_accuracy(train_src, os.path.join(folders["degraded"], "labels"),
                              os.path.join(folders[labels], "labels"), int(dc.num_classes)))
    completions[labels] = c

  # 4. segmenters, each arm once per seed (seed 0 keeps the single-seed folder name, so its runs are reused)
  seg = {}
  for m in models:
    for labels in label_sets:
      stamp = {"degrade": degrade if labels != "full" else None,
               "completion": {k: completions[labels][k] for k in ("method", "models")} if labels in completions
               else None}
      runs = [train_arm(seg_config(args, m, labels, folders, seed),
                        os.path.join(args.workdir, f"{m}_{labels}" + (f"_s{seed}" if seed else "")), stamp)
              for seed in range(args.seeds)]
      seg[f"{m}_{labels}"] = seeds_summary(runs)

  # 5. label quality against the truth (at the files' resolution)
  quality = label_quality(train_src, {k: os.path.join(v, "labels") for k, v in folders.items()
                                      if k in label_sets}, int(dc.num_classes))
  markdown = table(seg, quality, models, label_sets, completions, args.seeds)
  command = abl.command_line("label_augmentation.py", argv)
  report = {"command": command, "dataset": args.dataset, "tiny": args.tiny, "degrade": degrade,
            "lmae": lmae_runs, "completions": completions, "seeds": args.seeds, "segmenters": seg, "label_quality": quality,
            "seconds": time.perf_counter() - start, "markdown": markdown}
  print(markdown)
  with open(os.path.join(args.workdir, "label_augmentation.json"), "w") as f:
    json.dump(report, f, indent=1)
  if args.results:
    abl.write_markdown(args.results, "L-MAE label augmentation", command, markdown)
  return report


if __name__ == "__main__":
  main()
