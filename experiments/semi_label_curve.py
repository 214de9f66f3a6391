"""The supervised CamVid label curve: dev mIoU against the number of labeled images, several seeds per row.

  python experiments/semi_label_curve.py --workdir=runs/curve_16k --steps=16000 [--rows=32,8,2,all]
      [--seeds=0,1,2] [--reference=8] [--only_trained] [--set key=value ...]

Row `n` trains `configs/semi.py:camvid,recipe,supervised,<n>` on 1/n of `train@fit` (the nested labeled split of
`semi.split_seed`, written once to <workdir>/n<n>/splits and shared by the row's seeds), row `all` on all of it;
every run is evaluated on `train@dev` (the development split: the curve chooses a regime, so val stays unseen).
Runs go to <workdir>/<row>/supervised/seed<k>, the layout of `semi_camvid.py`, whose config code this reuses. A
run whose folder holds the final checkpoint is only re-evaluated; `--only_trained` leaves out the runs not yet
trained, so a partial table prints while others are pending.

Prints JSON, then a markdown table: dev mIoU per seed, mean +- std (sample), a few per-class IoUs (mean), and each
row's gap over the `--reference` row (default 1/8): the gap of the means, its standard error, and the smallest
pairwise gap (the row's worst seed minus the reference's best). "Labels matter" (issue bar) when the `all` row's
mean gap is at least 5 and even its smallest pairwise gap is above 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import semi_camvid  # experiments/ is on the path when this script runs

from maskseg_jax import train

CLASSES = ("sidewalk", "tree", "fence", "car", "bicyclist")  # the classes the curve's rows differ on most
PROTOCOL = ("data.train_split=train@fit", "data.val_split=train@dev")


def row_folder(workdir: str, row: str) -> str:
  return os.path.join(workdir, "all" if row == "all" else f"n{row}")


def row_args(row: str, steps: int, seed: int, sets: list[str]) -> argparse.Namespace:
  """`semi_camvid.py`'s arguments for one run of the curve (its parser's defaults for the rest)."""
  extra = ["semi.labeled_fraction=0"] if row == "all" else []
  sets = [*PROTOCOL, *extra, f"seed={seed}", *sets]
  return semi_camvid.parser().parse_args(["--size=recipe", f"--steps={steps}",
                                          f"--labeled_n={8 if row == 'all' else row}", *(f"--set={x}" for x in sets)])


def run_once(row: str, seed: int, args) -> dict | None:
  """Trains (or re-evaluates) one run; None when `--only_trained` and it has not finished training."""
  folder = row_folder(args.workdir, row)
  workdir = os.path.join(folder, "supervised", f"seed{seed}")
  if args.only_trained and not os.path.isdir(os.path.join(workdir, "checkpoints", str(args.steps))):
    return None
  config = semi_camvid.variant_config("supervised", row_args(row, args.steps, seed, args.set), folder)
  start = time.perf_counter()
  scalars = train.run(config, workdir)
  return dict(row=row, seed=seed, miou=100 * scalars["val/miou"], seconds=round(time.perf_counter() - start, 1),
              iou={c: 100 * scalars.get(f"val/iou/{c}", float("nan")) for c in CLASSES}, workdir=workdir)


def summarise(runs: list[dict], reference: str) -> list[dict]:
  """One entry per row: seeds, mean, std and the gap over the reference row."""
  rows = {}
  for r in runs:
    rows.setdefault(r["row"], []).append(r)
  ref = [r["miou"] for r in rows.get(reference, [])]
  out = []
  for row, items in rows.items():
    mious = [r["miou"] for r in items]
    entry = dict(row=row, seeds=[r["seed"] for r in items], miou=mious, mean=statistics.fmean(mious),
                 std=statistics.stdev(mious) if len(mious) > 1 else None,
                 iou={c: statistics.fmean(r["iou"][c] for r in items) for c in CLASSES})
    if ref and row != reference:
      entry["gap"] = entry["mean"] - statistics.fmean(ref)
      entry["min_pairwise_gap"] = min(mious) - max(ref)
      if len(mious) > 1 and len(ref) > 1:
        entry["gap_se"] = math.sqrt(statistics.variance(mious) / len(mious) + statistics.variance(ref) / len(ref))
    out.append(entry)
  return out


def markdown(summary: list[dict], reference: str, seeds: list[int]) -> str:
  head = ["labeled rows", *(f"seed {s}" for s in seeds), "mean ± std", *CLASSES,
          f"gap over 1/{reference} (± s.e.)", "smallest pairwise gap"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for e in summary:
    per_seed = {s: m for s, m in zip(e["seeds"], e["miou"])}
    std = "" if e["std"] is None else f" ± {e['std']:.1f}"
    gap = "-" if "gap" not in e else f"{e['gap']:+.1f}" + (f" ± {e['gap_se']:.1f}" if "gap_se" in e else "")
    pair = "-" if "min_pairwise_gap" not in e else f"{e['min_pairwise_gap']:+.1f}"
    cells = [e["row"] if e["row"] == "all" else f"1/{e['row']}",
             *(f"{per_seed[s]:.1f}" if s in per_seed else "" for s in seeds), f"**{e['mean']:.1f}**{std}",
             *(f"{e['iou'][c]:.1f}" for c in CLASSES), gap, pair]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--steps", type=int, default=16000)
  ap.add_argument("--rows", default="32,8,2,all", help="comma list: n (1/n of train@fit labeled) or all")
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--reference", default="8", help="the row every gap is measured from")
  ap.add_argument("--only_trained", action="store_true", help="leave out runs whose training has not finished")
  ap.add_argument("--set", action="append", default=[], help="key=value config override for every run")
  args = ap.parse_args()
  rows = [r.strip() for r in args.rows.split(",") if r.strip()]
  for row in rows:
    if row != "all" and not (row.isdigit() and int(row) >= 1):
      raise SystemExit(f"error: --rows entry {row!r}; expected a whole number n >= 1 (1/n labeled) or 'all'")
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  runs = [r for r in (run_once(row, seed, args) for row in rows for seed in seeds) if r is not None]
  if not runs:
    raise SystemExit(f"error: no finished run of {args.steps} steps under {args.workdir}")
  summary = summarise(runs, args.reference)
  print(json.dumps(dict(experiment="semi_label_curve", steps=args.steps, runs=runs, summary=summary), indent=1))
  print(markdown(summary, args.reference, seeds))


if __name__ == "__main__":
  main()
