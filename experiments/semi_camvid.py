"""CPU-sized CamVid comparison of the semi-supervised variants, all with the same labeled images and schedule.

  python experiments/semi_camvid.py --workdir=/tmp/semi_camvid [--steps=240] [--variants=supervised,unimatch]
      [--eval_every=80] [--set semi.ensemble_guard=confident --set model.init_from=encoder:/tmp/sel_run ...]

Each variant is `configs/semi.py:camvid,<size>,<variant>,<n>` run through `train.run` with one shared split folder (so
every variant reads the identical 1/n labeled split, `--labeled_n`, default 8), the same seed, steps and learning-rate schedule, evaluated
once at the end (or every --eval_every steps) on the full val split. The configs switch on the pseudo-label
diagnostics (`semi.diagnostics`): the table adds the last eval's share of unlabeled pixels passing the threshold,
pseudo-label accuracy against the unlabeled images' hidden truth, and the distance between the pseudo-label and
truth class shares; every eval's per-class shares are in each variant's metrics.jsonl / TensorBoard
(`semi_diag/*`). `--set key=value` overrides any config field for every variant (e.g. a collapse guard or an
`encoder:` init from a pretraining run). Prints the results as JSON, then as a markdown table. A variant whose
workdir already holds the final checkpoint is only re-evaluated, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from maskseg_jax import config_base
from maskseg_jax import train
from maskseg_jax.data import sources
from maskseg_jax.methods.semi_supervised import streams as semi_streams

VARIANTS = ("supervised", "fixmatch", "unimatch", "s4mim", "maskmatch")
LABELS = {"supervised": "supervised only", "fixmatch": "FixMatch", "unimatch": "UniMatch",
          "s4mim": "UniMatch + S4MIM", "maskmatch": "UniMatch + MaskMatch", "all": "UniMatch + S4MIM + MaskMatch"}
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "semi.py")


def load_config(arg: str):
  return config_base.load_config(CONFIG, arg)

def variant_config(variant: str, args, workdir: str, init: str = ""):
  c = load_config(f"camvid,{args.size},{variant},{args.labeled_n}")
  c.unlock()
  if init:  # a pretraining run's encoder (selective / random masking): only the backbone is loaded
    c.model.init_from = f"encoder:{init}"
  c.train.steps = args.steps or c.train.steps  # default: the config's
  steps = c.train.steps
  c.train.eval_every = args.eval_every or steps  # default: one eval, at the end
  c.train.checkpoint_every = steps
  c.train.log_every = max(1, min(25, steps))
  c.semi.split_dir = os.path.join(workdir, "splits")  # shared by every variant: identical labeled images
  if args.crop:
    c.data.crop_size = tuple(int(s) for s in args.crop.split(","))
  if args.image_scale:
    c.data.image_scale = args.image_scale
    c.data.eval_resize = True
  if args.max_eval_images:
    c.data.max_eval_images = args.max_eval_images
  if args.batch:
    c.data.batch_size = args.batch
  if args.validate_items:
    c.data.validate_items = args.validate_items
  for item in args.set:
    key, _, value = item.partition("=")
    set_field(c, key, value)
  c.lock()
  return c


def set_field(config, key: str, text: str) -> None:
  """`--set a.b=value`: the value parsed as the field's current type (tuples as comma lists)."""
  node = config
  *parents, last = key.split(".")
  for parent in parents:
    node = node[parent]
  current = node[last]
  if isinstance(current, bool):
    value = text.lower() in ("1", "true", "yes")
  elif isinstance(current, (tuple, list)):
    kind = int if current and all(isinstance(v, int) for v in current) else float  # (h, w) sizes stay ints
    value = tuple(kind(float(v)) for v in text.split(",") if v)
  elif isinstance(current, (int, float)):
    value = type(current)(float(text)) if isinstance(current, int) else float(text)
  else:
    value = text
  node[last] = value


def last_eval_diagnostics(workdir: str) -> dict:
  """The last eval's semi_diag/* headline scalars (pseudo-label diagnostics), {} when there are none."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  rows = [json.loads(line) for line in open(path)]
  rows = [r for r in rows if r.get("split") == "eval" and "semi_diag/conf_frac" in r]
  if not rows:
    return {}
  return {k.split("/", 1)[1]: v for k, v in rows[-1].items() if k.startswith("semi_diag/")}


def last_train_metrics(workdir: str) -> dict:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  rows = [json.loads(line) for line in open(path)]
  rows = [r for r in rows if r.get("split") == "train"]
  return rows[-1] if rows else {}


def markdown(results: list[dict], args) -> str:
  lines = [f"CamVid {results[0]['eval_split']} mIoU, 1/{args.labeled_n} labeled ({results[0]['labeled']} images), "
           f"{results[0]['steps']} steps (`configs/semi.py:camvid,{args.size},<variant>,{args.labeled_n}`)", "",
           "| method | mIoU | pixel acc | conf. pixels (last log) | unlabeled: passing tau | PL acc | "
           "PL acc (passing) | PL/truth class TV | train s |", "|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
  for r in results:
    d = r.get("diagnostics", {})
    stopped = "" if r.get("trained_steps", r["steps"]) >= r["steps"] else f" (stopped at {r['trained_steps']})"
    seed = "" if len(set(x.get("seed") for x in results)) < 2 else f" seed {r.get('seed')}"
    init = "" if r.get("init", "none") == "none" else f" (init: {r['init']})"
    lines.append(f"| {r['method']}{init}{seed}{stopped} | {r['miou']:.4f} | {r['pixel_acc']:.4f} | {fmt(r['conf_frac'])} | "
                 f"{fmt(d.get('conf_frac'))} | {fmt(d.get('pl_acc'))} | {fmt(d.get('pl_acc_conf'))} | "
                 f"{fmt(d.get('pl_tv'))} | {r['seconds']:.0f} |")
  return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", default="/tmp/semi_camvid")
  ap.add_argument("--steps", type=int, default=0, help="0: the config's (cpu: 240, recipe: 3600)")
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--crop", default="", help="h,w of training crops (default: the config's 72,96)")
  ap.add_argument("--image_scale", type=float, default=0.0, help="override data.image_scale (smoke tests)")
  ap.add_argument("--max_eval_images", type=int, default=0, help="0: the whole val split")
  ap.add_argument("--batch", type=int, default=0, help="labeled (= unlabeled) batch size (default: the config's)")
  ap.add_argument("--validate_items", type=int, default=0, help="items decoded per split before training "
                  "(default: the config's)")
  ap.add_argument("--eval_every", type=int, default=0, help="eval (and diagnostics) every N steps (0: at the end)")
  ap.add_argument("--set", action="append", default=[], help="key=value config override for every variant")
  ap.add_argument("--labeled_n", type=int, default=8, help="1/n of the 367 train images labeled (default 8: 46)")
  ap.add_argument("--size", default="cpu", choices=("cpu", "recipe"),
                  help="configs/semi.py:camvid size: cpu (240 steps, the papers' settings) or recipe (this "
                       "project's CamVid regime: labeled-only warm-up, ramp, longer schedule)")
  ap.add_argument("--init", action="append", default=[],
                  help="NAME=RUN: also train every variant from the encoder of pretraining run RUN (repeat for "
                       "several); runs go to <workdir>/<NAME>/..., the from-scratch ones to <workdir>/none/...")
  ap.add_argument("--seeds", default="", help="comma list of seeds (model init and data order; the labeled split "
                  "stays semi.split_seed's): runs go to <workdir>/<variant>/seed<k> and a mean/spread table follows")
  return ap


def main() -> None:
  args = parser().parse_args()
  seeds = [int(x) for x in args.seeds.split(",") if x] or [None]
  inits = parse_inits(args.init)
  results = []
  for init, variant, seed in [(i, v, k) for i in inits for v in args.variants.split(",") for k in seeds]:
    workdir = os.path.join(args.workdir, init if args.init else "", variant,
                           "" if seed is None else f"seed{seed}").rstrip(os.sep)
    config = variant_config(variant, args, args.workdir, inits[init])
    if seed is not None:
      config.unlock()
      config.seed = seed
      config.lock()
    start = time.perf_counter()
    scalars = train.run(config, workdir)
    seconds = time.perf_counter() - start
    labeled_split, _ = semi_streams.resolve_splits(config, workdir)  # a generated file, or data.train_split
    labeled = len(sources.select_source(config.data, labeled_split))
    last = last_train_metrics(workdir)
    results.append(dict(variant=variant, init=init, method=LABELS[variant], miou=scalars["val/miou"],
                        pixel_acc=scalars["val/pixel_acc"], conf_frac=last.get("conf_frac"),
                        final_loss=last.get("loss"), steps=config.train.steps, labeled=labeled,
                        eval_split=config.data.val_split, seconds=round(seconds, 1),
                        workdir=workdir, diagnostics=last_eval_diagnostics(workdir), seed=config.seed,
                        trained_steps=int(last.get("step", 0))))
  print(json.dumps(dict(experiment="semi_camvid", results=results), indent=1))
  print(markdown(results, args))
  if len(seeds) > 1 or args.init:
    print()
    print(seed_summary(results))


def parse_inits(specs: list[str]) -> dict[str, str]:
  """['selective=RUN', ...] -> {'none': '', 'selective': RUN, ...} (from scratch first)."""
  inits = {"none": ""}
  for spec in specs:
    name, sep, run = spec.partition("=")
    if not sep or not name or not run or name == "none":
      raise SystemExit(f"error: --init={spec!r}; expected NAME=RUN_FOLDER with NAME other than 'none'")
    if not os.path.isdir(run):
      raise SystemExit(f"error: --init={spec!r}: {run} is not a folder (a selective/random pretraining run)")
    inits[name] = run
  return inits


def seed_summary(results: list[dict]) -> str:
  """Mean and spread (max - min) of the eval split's mIoU over the seeds of each (init, variant), with the margin
  of each row's mean over the supervised-only row of the same init (what the unlabeled images bought)."""
  lines = ["| init | method | seeds | mIoU mean | spread (max - min) | vs supervised only | mIoU per seed |",
           "|---|---|---|---|---|---|---|"]
  groups = {}
  for r in results:
    groups.setdefault((r.get("init", "none"), r["variant"]), []).append(r["miou"])
  for (init, variant), mious in groups.items():
    mean = sum(mious) / len(mious)
    sup = groups.get((init, "supervised"))
    margin = "-" if sup is None or variant == "supervised" else f"{100 * (mean - sum(sup) / len(sup)):+.1f}"
    lines.append(f"| {init} | {LABELS[variant]} | {len(mious)} | {mean:.4f} | {max(mious) - min(mious):.4f} | "
                 f"{margin} | {' / '.join(f'{m:.3f}' for m in mious)} |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
