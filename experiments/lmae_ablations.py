"""L-MAE ablations at CPU scale: IPS, Stack Fuse, mask strategies, mask ratios and this project's extensions.

  python experiments/lmae_ablations.py --workdir=runs/lmae_ablations --steps=800 \
      [--groups=ips,fuse,strategy,ratio,extensions] [--ratios=0.6,0.75] [--dataset=camvid|synthetic] \
      [--config_arg=cpu|recipe] [--set KEY=VALUE ...] [--variants=a,b] [--seeds=0,1] \
      [--results=experiments/results/lmae_ablations.md]

Every variant is lmae.py:<dataset> (camvid: `camvid,<--config_arg>`, `cpu` by default) with the `--set`
overrides, then one change, trained with the same steps, seeds and schedule; that config itself is the shared
`baseline` row of every group. The `extensions` group (`EXTENSION_VARIANTS`) switches this project's extensions
off one at a time from `--config_arg=recipe` (progressive completion, the learning rate 4e-3 with clipping and
Lovasz weight 3 back to 3e-3 and 2, the learning rate 1e-3, Lovasz weight 1, mirror averaging, Lovasz, the wider
ViT, the nearest prior, the refinement head; all of them = the paper's tiny model; `prior_skip` adds that one);
`--variants` names the group's variants instead, e.g. the ones measured on top of an earlier recipe given as
`--set` overrides (experiments/results/lmae_recipe.md: geodesic prior, Lovasz, wider ViT). With several `--seeds` every cell
is the mean over seeds (± half the range), and the non-learned fills scored on the same masks (identical in
every run: the eval masks do not depend on the seed) are rows of their own, with the margin of each variant
over the best fill. Each run is scored on val at its own training ratio with Background-First
masks (`val/*`, the completion setting) and random masks (`val_random/*`): PA-mIoU (masked pixels only) and
global mIoU (given + predicted pixels). PA-mIoU of different ratios measures different tasks (more to fill),
so the ratio group shows a trade-off, not a ranking. Runs live in `<workdir>/<variant>`; a finished run's
scores are cached in its `ablation.json` (keyed by its whole config), so a rerun only prints the table, and
experiments/label_augmentation.py reuses the baseline and ratio runs as completion models.
`--tiny` shrinks everything to a smoke test (16 CamVid images at 1/8 scale or synthetic 32 px scenes, 32 px
models; with a few --steps the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("ips", "fuse", "strategy", "ratio", "extensions")
RESULT_FILE = "ablation.json"

# The ViT sizes the variants switch between (a 0 takes the value of model.size, tiny).
VIT_3_2X128 = {"model.enc_depth": 3, "model.enc_dim": 0, "model.dec_depth": 2, "model.dec_dim": 128}
SIZE_VIT = {"model.enc_depth": 0, "model.enc_dim": 0, "model.dec_depth": 0, "model.dec_dim": 0}

# Each variant is the baseline plus these dotted overrides.
VARIANTS = {
    "baseline": {},
    "mask_token": {"model.ips": False},
    "fuse_insert": {"model.fuse": "insert"},
    "fuse_direct": {"model.fuse": "direct"},
    "random_only": {"lmae.strategy_probs": (1, 0, 0)},
    "bf_only": {"lmae.strategy_probs": (0, 1, 0)},
    "lf_only": {"lmae.strategy_probs": (0, 0, 1)},
    "no_prior": {"model.prior": "none"},
    "no_refine": {"model.refine_width": 0},
    "no_extensions": {"model.prior": "none", "model.refine_width": 0},
    "geodesic_prior": {"model.prior": "geodesic"},
    "lovasz": {"lmae.lovasz_weight": 1.0},
    "wider_vit": dict(VIT_3_2X128),
    "lovasz_wider": {"lmae.lovasz_weight": 1.0, **VIT_3_2X128},
    "lovasz_3": {"lmae.lovasz_weight": 3.0},
    "no_lovasz": {"lmae.lovasz_weight": 0.0},
    "tiny_vit": dict(SIZE_VIT),
    "paper_model": {"model.prior": "none", "model.refine_width": 0, "lmae.lovasz_weight": 0.0, "lmae.fill_blend": 0.0,
                    "lmae.mirror_average": False, "lmae.progressive_reveal": (), **SIZE_VIT},
    "lr_1e3": {"optim.lr": 1e-3, "optim.grad_clip": 0.0},
    "lr3e3_lovasz2": {"optim.lr": 3e-3, "lmae.lovasz_weight": 2.0},
    "lovasz_1": {"lmae.lovasz_weight": 1.0},
    "no_mirror": {"lmae.mirror_average": False},
    "progressive": {"lmae.progressive_reveal": (0.5, 0.8, 0.95)},
    "prior_skip": {"model.prior_skip": True},
}
EXTENSION_VARIANTS = ["baseline", "progressive", "lr3e3_lovasz2", "lr_1e3", "lovasz_1", "no_mirror", "prior_skip",
                      "wider_vit", "no_lovasz", "tiny_vit", "no_prior", "no_refine", "paper_model"]
SETTINGS = {"baseline": "IPS, layer fuse, R:BF:LF 1:2:2, ratio 0.5", "mask_token": "learned mask token (no IPS)",
            "fuse_insert": "insert fuse (R,y,G,y,B,y)", "fuse_direct": "direct fuse (y/N channel)",
            "random_only": "Random only", "bf_only": "Background-First only", "lf_only": "Label-First only",
            "no_prior": "without the nearest prior", "no_refine": "without the refinement head",
            "no_extensions": "without both (the paper's model)",
            "geodesic_prior": "geodesic prior instead of the nearest one",
            "lovasz": "+ Lovasz-softmax loss (weight 1)", "wider_vit": "encoder 3 blocks, decoder 2 x 128",
            "lovasz_wider": "+ Lovasz (weight 1), encoder 3 blocks, decoder 2 x 128",
            "lovasz_3": "+ Lovasz-softmax loss (weight 3)",
            "no_lovasz": "without the Lovasz term",
            "tiny_vit": "the cpu-size ViT (encoder 2 blocks, decoder 1 x 64)",
            "paper_model": "without every extension (the paper's tiny model)",
            "lr_1e3": "learning rate 1e-3 without gradient clipping",
            "lr3e3_lovasz2": "learning rate 3e-3, Lovasz weight 2",
            "lovasz_1": "Lovasz weight 1", "no_mirror": "without mirror averaging",
            "progressive": "with progressive completion (0.5, 0.8, 0.95)",
            "prior_skip": "+ the prior skip (learned logits at the prior's class)"}

TINY = {  # smoke-test scale per dataset: a handful of items, 32 px model inputs
    "camvid": {"data.train_split": "train[:16]", "data.val_split": "val[:8]", "data.image_scale": 0.125,
               "data.crop_size": (40, 56), "model.image_size": (32, 40), "data.eval_size": (32, 40),
               "data.batch_size": 8, "data.eval_batch_size": 8, "data.validate_items": 4, "train.num_images": 1},
    "synthetic": {"data.synthetic.num_train": 16, "data.synthetic.num_val": 8, "data.synthetic.image_size": (32, 32),
                  "data.crop_size": (32, 32), "model.image_size": (32, 32), "data.eval_size": (32, 32),
                  "data.batch_size": 8, "data.eval_batch_size": 8, "data.validate_items": 4, "train.num_images": 1},
}


def ratio_variant(ratio: float) -> str:
  return "baseline" if abs(ratio - 0.5) < 1e-9 else f"ratio_{ratio:g}"


def variant_overrides(name: str) -> dict:
  if name.startswith("ratio_"):
    return {"lmae.mask_ratio": float(name[len("ratio_"):])}
  return dict(VARIANTS[name])


def group_variants(group: str, ratios, variants=()) -> list[str]:
  """The group's variants; `variants` replaces the extensions group's (`--variants`)."""
  if group == "ips":
    return ["baseline", "mask_token"]
  if group == "fuse":
    return ["baseline", "fuse_insert", "fuse_direct"]
  if group == "strategy":
    return ["baseline", "random_only", "bf_only", "lf_only"]
  if group == "ratio":
    return [ratio_variant(r) for r in sorted(set([0.5, *ratios]))]
  if group == "extensions":
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
      raise SystemExit(f"--variants: unknown variant(s) {unknown}; expected some of {sorted(VARIANTS)}")
    return list(variants or EXTENSION_VARIANTS)
  raise SystemExit(f"unknown group {group!r}; expected some of {GROUPS}")


from maskseg_jax.config_base import load_config  # noqa: E402  (re-exported for label_augmentation)

def parse_sets(items) -> dict:
  """`--set key=value` pairs; values are Python literals where they parse, else strings."""
  out = {}
  for item in items or ():
    key, _, text = item.partition("=")
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def variant_config(name: str, dataset: str, steps: int, *, tiny: bool = False, extra: dict | None = None,
                   config_arg: str = "cpu"):
  """configs/lmae.py:<dataset> (camvid: `camvid,<config_arg>`) with the shared schedule (one eval and one checkpoint, at
  the end), `extra` overrides, then the variant's own change."""
  config_name, arg = ("lmae", f"camvid,{config_arg}") if dataset == "camvid" else ("lmae", "synthetic")
  o = {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": steps,
       "train.log_every": max(1, min(50, steps)), **(TINY[dataset] if tiny else {}), **(extra or {})}
  return load_config(config_name, arg, {**o, **variant_overrides(name)})


def last_eval_step(workdir: str) -> int | None:
  """Step of the last evaluation in `workdir/metrics.jsonl` (None if there is none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    steps = [row["step"] for row in map(json.loads, f) if row.get("split") == "eval"]
  return steps[-1] if steps else None


def train_variant(config, workdir: str, *, train_missing: bool = True) -> dict | None:
  """Trains (or finishes, or reuses) one run; -> {"scalars", "seconds", "reused"} (None: not cached and
  `train_missing` is False)."""
  from maskseg_jax import train
  path = os.path.join(workdir, RESULT_FILE)
  key = config.to_json_best_effort(sort_keys=True)
  if os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("config") == key:
      return {"scalars": saved["scalars"], "seconds": saved["seconds"], "reused": True}
  if not train_missing:
    return None
  t = time.perf_counter()
  scalars = {k: float(v) for k, v in train.run(config, workdir).items()}
  seconds = time.perf_counter() - t
  reached = last_eval_step(workdir)
  if reached != int(config.train.steps):  # stopped early (SIGTERM, Ctrl-C): never cache a partial run
    raise SystemExit(f"{workdir} stopped at step {reached} of {config.train.steps}; rerun to resume it")
  with open(path, "w") as f:
    json.dump({"config": key, "scalars": scalars, "seconds": seconds}, f, indent=1)
  return {"scalars": scalars, "seconds": seconds, "reused": False}


METRICS = (("val/pa_miou", "PA-mIoU BF"), ("val/miou", "mIoU BF"), ("val_random/pa_miou", "PA-mIoU random"),
           ("val_random/miou", "mIoU random"))


def setting_of(name: str, config_arg: str = "cpu", sets=()) -> str:
  if name.startswith("ratio_"):
    return f"mask ratio {name[len('ratio_'):]}"
  if name == "baseline" and (config_arg != "cpu" or sets):
    return " + ".join([f"lmae.py:camvid,{config_arg}", *sets]) + ", ratio 0.5"
  return SETTINGS[name]


MARGINS = (("val/margin_pa_miou", "margin PA BF"), ("val_random/margin_pa_miou", "margin PA random"))


def cell(values) -> str:
  """Mean of the seeds' figures in points, ± half their range when there are several."""
  values = [100 * v for v in values]
  mean = sum(values) / len(values)
  return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {(max(values) - min(values)) / 2:.1f}"


def fill_names(runs: dict) -> list[str]:
  """Non-learned fills the runs were scored against (`val/<fill>/pa_miou`)."""
  first = next(r for seeds in runs.values() for r in seeds)["scalars"]
  return sorted(k.split("/")[1] for k in first if k.startswith("val/") and k.endswith("/pa_miou")
                and k.count("/") == 2)


def table(groups: dict, runs: dict, config_arg: str = "cpu", sets=()) -> str:
  """`runs[name]` is the list of that variant's seeds; fills are shown once, below the variants."""
  first = next(r for seeds in runs.values() for r in seeds)["scalars"]
  margins = [m for m in MARGINS if m[0] in first]
  head = ["group", "variant", "setting"] + [label for _, label in METRICS + tuple(margins)] + ["seeds", "train s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for group, names in groups.items():
    for name in names:
      seeds = runs[name]
      cells = [group, name, setting_of(name, config_arg, sets)]
      if not seeds:
        lines.append("| " + " | ".join(cells + ["not run"] * (len(head) - 3)) + " |")
        continue
      for key, _ in METRICS + tuple(margins):
        vals = [r["scalars"][key] for r in seeds if key in r["scalars"]]
        cells.append(cell(vals) if vals else "-")
      cells += [str(len(seeds)), f"{sum(r['seconds'] for r in seeds) / len(seeds):.0f}"]
      lines.append("| " + " | ".join(cells) + " |")
  for fill in fill_names(runs):
    cells = ["fill", fill, "non-learned, same masks"]
    for key, _ in METRICS:
      prefix, metric = key.split("/")
      k = f"{prefix}/{fill}/{metric}"
      cells.append(f"{100 * first[k]:.1f}" if k in first else "-")
    cells += ["-"] * len(margins) + ["-", "0"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def add_xla_cache_flag(ap: argparse.ArgumentParser) -> None:
  ap.add_argument("--xla_cache", default=os.path.join(tempfile.gettempdir(), "maskseg_jax_xla_cache"),
                  help="persistent compilation cache ('' = off)")


def command_line(script: str, argv=None) -> str:
  """The shell command that reran this experiment (arguments quoted where the shell needs it)."""
  return " ".join(["python", f"experiments/{script}"] + [shlex.quote(a) for a in (argv if argv is not None
                                                                                   else sys.argv[1:])])


def write_markdown(path: str, title: str, command: str, markdown: str) -> None:
  """A results file: the title, the command that made it, the tables."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(f"# {title}\n\n```\n{command}\n```\n\n{markdown}\n")


def setup_jax(xla_cache: str) -> None:
  import jax
  if xla_cache:
    jax.config.update("jax_compilation_cache_dir", xla_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--steps", type=int, default=800)
  ap.add_argument("--groups", default=",".join(GROUPS))
  ap.add_argument("--ratios", default="0.6,0.75", help="ratio group: ratios besides the baseline's 0.5")
  ap.add_argument("--dataset", default="camvid", choices=("camvid", "synthetic"))
  ap.add_argument("--config_arg", default="cpu", help="camvid: the size of the baseline, lmae.py:camvid,<cpu|recipe>")
  ap.add_argument("--seeds", default="0", help="comma-separated config seeds; every variant runs each")
  ap.add_argument("--variants", default="", help="comma-separated variants of the extensions group (default: "
                  "EXTENSION_VARIANTS, the recipe's)")
  ap.add_argument("--skip", default="", help="comma-separated variants to leave out of the groups (budget)")
  ap.add_argument("--table_only", action="store_true", help="train nothing: tabulate the finished runs")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="extra dotted config override for every variant (repeatable)")
  ap.add_argument("--tiny", action="store_true", help="minuscule smoke-test scale")
  ap.add_argument("--results", default="", help="also write the markdown (command on top) to this file")
  add_xla_cache_flag(ap)
  args = ap.parse_args(argv)
  setup_jax(args.xla_cache)
  ratios = [float(r) for r in args.ratios.split(",") if r]
  skip = set(args.skip.split(",")) - {""}
  variants = [v for v in args.variants.split(",") if v]
  groups = {g: [v for v in group_variants(g, ratios, variants) if v not in skip]
            for g in args.groups.split(",") if g}
  extra = parse_sets(args.set)
  start = time.perf_counter()
  seeds = [int(s) for s in args.seeds.split(",") if s]
  runs = {}
  for names in groups.values():
    for name in names:
      if name not in runs:  # the baseline is trained once and shown in every group
        runs[name] = []
        for seed in seeds:
          config = variant_config(name, args.dataset, args.steps, tiny=args.tiny, extra={**extra, "seed": seed},
                                  config_arg=args.config_arg)
          folder = name if seed == 0 else f"{name}_s{seed}"  # seed 0: the folder other scripts reuse
          run = train_variant(config, os.path.join(args.workdir, folder), train_missing=not args.table_only)
          if run is not None:
            runs[name].append(run)
  markdown = table(groups, runs, args.config_arg, args.set)
  command = command_line("lmae_ablations.py", argv)
  report = {"command": command, "dataset": args.dataset, "steps": args.steps, "tiny": args.tiny, "groups": groups,
            "runs": runs, "seconds": time.perf_counter() - start, "markdown": markdown}
  print(markdown)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "lmae_ablations.json"), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(args.workdir, "lmae_ablations.md"), "w") as f:
    f.write(markdown + "\n")
  if args.results:
    write_markdown(args.results, "L-MAE ablations", command, markdown)
  return report


if __name__ == "__main__":
  main()
