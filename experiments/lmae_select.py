"""Choose L-MAE's evaluation-time settings on the development split, then report the choice once on val.

  python experiments/lmae_select.py --runs=runs/dev/recipe_s0[,RUN2] --split=train@dev \
      --variant='blend_0=lmae.fill_blend=0' --variant='one_pass=lmae.progressive_reveal=()' ... \
      [--results=experiments/results/lmae_selection.md]
  python experiments/lmae_select.py --runs=RUN0,RUN1,RUN2 --split=val --variant='chosen=...'   # the report

Each run (trained with `configs/lmae.py:camvid,recipe,dev`, i.e. on train@fit; `--config`/`--config_arg` name
its training config) is copied to a scratch folder and evaluated (mode=eval) on `--split` once per variant: the
run's own settings (`as_trained`) plus every `--variant NAME=KEY=VALUE[;KEY=VALUE...]` (evaluation-time fields only: lmae.fill_blend,
lmae.progressive_reveal, lmae.mirror_average, ...; training is untouched, so the rows of one run differ only by
the setting). The table gives, per variant and mean over the runs, PA-mIoU with Background-First and random
masks, the best fill's, the margins, and `score` = the mean of the two margins, the criterion a choice is made
on. The choice is the top `score` on the development split; val is evaluated with that one variant only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmae_ablations as abl  # noqa: E402  (--set parsing)

STRATEGIES = ("val", "val_random")  # Background-First and random masks (the evaluators' names)
FIELDS = ("pa_miou", "miou", "margin_pa_miou", "margin_miou")


def parse_variant(text: str) -> tuple[str, dict]:
  """'NAME=KEY=VALUE;KEY=VALUE' -> (NAME, {KEY: value}); values are Python literals where they parse."""
  name, sep, rest = text.partition("=")
  if not sep or not name:
    raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE[;KEY=VALUE...]")
  return name, abl.parse_sets(filter(None, rest.split(";")))


def evaluate(run: str, split: str, overrides: dict, base) -> dict:
  """Scores of `run` on `split` with `overrides` on `base` (the run's training config), from a scratch copy
  (the run folder is never written)."""
  from maskseg_jax import train
  from maskseg_jax.config_base import apply_overrides
  config = apply_overrides(base.copy_and_resolve_references(),
                           {**overrides, "mode": "eval", "data.val_split": split})
  scratch = tempfile.mkdtemp(prefix="lmae_select_")
  try:
    copy = os.path.join(scratch, "run")
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("metrics.jsonl", "eval.json", "tensorboard"))
    scores = train.run(config, copy)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  out = {}
  for s in STRATEGIES:
    for f in FIELDS:
      out[f"{s}/{f}"] = float(scores[f"{s}/{f}"])
    fills = [k for k in scores if k.startswith(f"{s}/") and k.endswith("/pa_miou") and k.count("/") == 2]
    out[f"{s}/best_fill_pa_miou"] = max(float(scores[k]) for k in fills) if fills else float("nan")
  out["score"] = float(np.mean([out[f"{s}/margin_pa_miou"] for s in STRATEGIES]))
  return out


def table(results: dict, runs: list[str]) -> list[str]:
  head = ("| variant | PA-mIoU BF | PA-mIoU random | best fill BF / random | margin BF | margin random | "
          "score (mean margin) | per run score |")
  lines = [head, "|" + "---|" * 8]
  for name, per_run in sorted(results.items(), key=lambda kv: -np.mean([r["score"] for r in kv[1]])):
    mean = {k: float(np.mean([r[k] for r in per_run])) for k in per_run[0]}
    lines.append(f"| {name} | {100 * mean['val/pa_miou']:.1f} | {100 * mean['val_random/pa_miou']:.1f} | "
                 f"{100 * mean['val/best_fill_pa_miou']:.1f} / {100 * mean['val_random/best_fill_pa_miou']:.1f} | "
                 f"{100 * mean['val/margin_pa_miou']:+.1f} | {100 * mean['val_random/margin_pa_miou']:+.1f} | "
                 f"{100 * mean['score']:+.2f} | "
                 + " / ".join(f"{100 * r['score']:+.1f}" for r in per_run) + " |")
  return lines


def select(runs: list[str], split: str, variants: list[tuple[str, dict]], base) -> dict:
  """{variant: [scores per run]} on `split`, printing each variant's mean score as it finishes."""
  results = {}
  for name, overrides in variants:
    t = time.perf_counter()
    results[name] = [evaluate(run, split, overrides, base) for run in runs]
    print(f"{name}: score {100 * np.mean([r['score'] for r in results[name]]):+.2f} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
  return results


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", required=True, help="comma-separated trained run folders")
  ap.add_argument("--split", default="train@dev", help="train@dev to choose, val to report the choice")
  ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[;KEY=VALUE]")
  ap.add_argument("--no_as_trained", action="store_true", help="skip the run's own settings row")
  ap.add_argument("--config", default="lmae", help="the runs' config file (configs/<name>.py or a path)")
  ap.add_argument("--config_arg", default="camvid,recipe,dev", help="its arg (the runs' training config)")
  ap.add_argument("--results", default="", help="append the table (with the command) to this markdown file")
  args = ap.parse_args(argv)
  runs = [r for r in args.runs.split(",") if r]
  variants = ([] if args.no_as_trained else [("as_trained", {})]) + [parse_variant(v) for v in args.variant]
  from maskseg_jax.config_base import load_config
  base = load_config(args.config, args.config_arg)
  results = select(runs, args.split, variants, base)
  lines = table(results, runs)
  print("\n".join(lines))
  print(json.dumps({"split": args.split, "runs": runs, "results": results}))
  if args.results:
    command = abl.command_line("lmae_select.py", argv)
    with open(args.results, "a") as f:
      f.write(f"\n```\n{command}\n```\n\nSplit `{args.split}`, runs {', '.join(runs)}:\n\n" + "\n".join(lines)
              + "\n")


if __name__ == "__main__":
  main()
