"""L-MAE train-step throughput at several mask ratios, as JSON: the visible-only encoder's saving.

  python experiments/benchmark_lmae.py [--size=cpu|paper|tiny] [--batch=8] [--steps=5] [--ratios=0,0.5,0.75]
  python experiments/benchmark_lmae.py --config_arg=camvid,recipe [--config=lmae] [--set model.prior=nearest ...]
  python experiments/benchmark_lmae.py --completion --images=DIR --labels=DIR [--model=RUN ...]
      [--methods=model,nearest,geodesic] [--missing=unknown_and_void] [--scale=train]

For each mask ratio: images/s of the jitted L-MAE train step (sharded over all local devices), compile
seconds, XLA's cost-analysis FLOPs per step, achieved FLOP/s and its fraction of a float32 matmul peak
measured in the same run. Only the encoder's token count falls with the ratio (the decoder always sees all
L positions), so FLOPs fall by less than the ratio. `cpu` is what a 2-core machine times in a minute;
`paper` is EB8/DB6/ED1440/DD720 at 224 (time it on an accelerator); `tiny` is for the smoke test.
`--config_arg=ARG` times a real config instead (`configs/<--config>.py:ARG` with `--set key=value` overrides,
repeatable, e.g. the CamVid recipe), at each ratio (`lmae.mask_ratio` set per row; batch: the config's
`data.batch_size` unless --batch), with its own model extensions, loss and class count.

`--completion`: the completion command (`maskseg_jax.complete.complete_folder`, file reading and writing
included) on a folder, per method: a first pass (with the model's compiles, one per mask bucket) and a timed
second pass into a fresh folder; images/s of the second pass, as JSON. `model` needs --model; fills need none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_models import matmul_peak, timed_step  # noqa: E402  (the shared timing code)

from maskseg_jax import config_base, optim, sharding, train  # noqa: E402
from maskseg_jax.errors import MasksegError  # noqa: E402
from maskseg_jax.methods import base  # noqa: E402
from maskseg_jax.methods.lmae import config as lmae_config  # noqa: E402
from maskseg_jax.methods.lmae import inference as inf  # noqa: E402
from maskseg_jax.methods.lmae import patch_masks as P  # noqa: E402
from maskseg_jax.methods.lmae import task as lmae_method  # noqa: E402

SIZES = {
    "tiny": dict(size="tiny", patch_size=8, image_size=32),  # smoke test only
    "cpu": dict(size="tiny", patch_size=8, image_size=64, enc_dim=256, dec_dim=128, enc_depth=4, dec_depth=2),
    "paper": dict(size="paper", patch_size=16, image_size=224),
}


def config_for(size: str, ratio: float, num_classes: int):
  s = dict(SIZES[size])
  c = config_base.base_config()
  c.data.num_classes = num_classes
  lmae_config.apply_lmae(c, size=s.pop("size"), patch_size=s.pop("patch_size"), image_size=s.pop("image_size"),
                         mask_ratio=ratio, class_weighting="none", loss_region="all")
  for k, v in s.items():
    c.model[k] = v
  return c


def parse_sets(items) -> dict:
  """`--set key=value` pairs; values are Python literals where they parse, else strings."""
  import ast
  out = {}
  for item in items or ():
    key, sep, text = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def named_config_for(name: str, arg: str, ratio: float, sets: dict):
  """`configs/<name>.py:<arg>` with `sets`, at mask ratio `ratio`."""
  return config_base.load_config(name, arg or None, {**sets, "lmae.mask_ratio": float(ratio)})


def completion_benchmark(args) -> dict:
  """images/s of the completion command on a folder, for the model and each fill."""
  import shutil
  import tempfile
  import time

  from maskseg_jax.methods.lmae import label_folder, runs
  rows = []
  completers = runs.resolve_models(args.model, "latest", print) if args.model else []
  for method in args.methods.split(","):
    if method == "model" and not completers:
      continue
    tmp = tempfile.mkdtemp(prefix="bench_completion_")
    try:
      times = []
      for run in ("first", "timed"):
        t = time.perf_counter()
        reports = label_folder.complete_folder(args.images, args.labels, os.path.join(tmp, run), completers,
                                           method=method, missing=args.missing, scale=args.scale,
                                           num_classes=args.num_classes, write_review=False,
                                           log=lambda s: None)  # the completion alone (no review files)
        times.append(time.perf_counter() - t)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    row = dict(method=method, files=len(reports), first_pass_s=round(times[0], 3), seconds=round(times[1], 3),
               images_per_s=round(len(reports) / times[1], 2),
               changed_pixels=sum(r.changed_pixels for r in reports))
    if method == "model":
      row.update(tiles=sum(r.tiles for r in reports),
                 mean_masked_fraction=round(float(np.mean([r.masked_fraction or 0 for r in reports])), 3),
                 compiles=sum(len(c.traces) for c in completers))
    rows.append(row)
  return dict(devices=jax.device_count(), platform=jax.devices()[0].platform, images=args.images,
              missing=args.missing, scale=args.scale, models=args.model, results=rows)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--completion", action="store_true", help="time the completion command on a folder instead")
  ap.add_argument("--images", default="")
  ap.add_argument("--labels", default="")
  ap.add_argument("--model", action="append", default=[])
  ap.add_argument("--methods", default="model,nearest,geodesic")
  ap.add_argument("--missing", default="unknown_and_void")
  ap.add_argument("--num_classes", type=int, default=None, help="the class count (default: --model's with "
                  "--completion, 21 with --size)")
  ap.add_argument("--scale", default="train")
  ap.add_argument("--size", default="cpu", choices=sorted(SIZES))
  ap.add_argument("--config", default="lmae", help="with --config_arg: the config file under configs/")
  ap.add_argument("--config_arg", default="", help="time configs/<--config>.py:ARG instead of a --size")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="with --config_arg: a dotted config override (repeatable)")
  ap.add_argument("--batch", type=int, default=None, help="batch size (default: 8, or the config's)")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--ratios", default="0,0.5,0.75")
  args = ap.parse_args(argv)
  sets = parse_sets(args.set)
  if sets and not args.config_arg:
    raise SystemExit("--set needs --config_arg (the --size models are fixed)")
  if args.completion:
    try:
      print(json.dumps(completion_benchmark(args), indent=1))
    except MasksegError as e:  # a bad folder or run: one line, as the completion command itself reports it
      raise SystemExit(f"error: {e}") from None
    return
  mesh = sharding.make_mesh()
  peak = matmul_peak() * jax.local_device_count()
  results = []
  for ratio in [float(r) for r in args.ratios.split(",")]:
    if args.config_arg:
      c = named_config_for(args.config, args.config_arg, ratio, sets)
      num_classes, batch_size = int(c.data.num_classes), args.batch or int(c.data.batch_size)
    else:
      num_classes, batch_size = args.num_classes or 21, args.batch or 8
      c = config_for(args.size, ratio, num_classes)
    mdef, tx, state = lmae_method.init_state(c, num_classes)
    step_fn = lmae_method.make_train_step(mdef, tx, optim.learning_rate(c.optim, 100), lc=c.lmae,
                                          model_config=c.model)
    step = train.compile_step(base.Task(state=state, train_step=step_fn, train_iter=None), mesh)
    p, h, w, num_patches = inf.geometry(c.model)
    rng = np.random.default_rng(0)
    batch = sharding.to_global({
        "image": rng.normal(size=(batch_size, h, w, 3)).astype(np.float32),
        "label": rng.integers(0, num_classes, (batch_size, h, w)).astype(np.int32)}, mesh)
    compile_s, step_s, flops = timed_step(step, sharding.replicate(state, mesh), batch, args.steps)
    results.append(dict(mask_ratio=ratio, visible_patches=P.num_visible(num_patches, ratio),
                        patches=num_patches, batch=batch_size, images_per_s=round(batch_size / step_s, 2),
                        step_s=round(step_s, 4), compile_s=round(compile_s, 2), step_gflop=round(flops / 1e9, 3),
                        achieved_gflop_s=round(flops / step_s / 1e9, 2),
                        fraction_of_matmul_peak=round(flops / step_s / peak, 3)))
  first = results[0]
  for r in results:
    r["flops_vs_first"] = round(r["step_gflop"] / max(first["step_gflop"], 1e-12), 3)
    r["speedup_vs_first"] = round(r["images_per_s"] / first["images_per_s"], 2)
  what = (dict(config=f"configs/{args.config}.py:{args.config_arg}", overrides=sets,
               model={k: v for k, v in c.model.to_dict().items() if not isinstance(v, dict)})
          if args.config_arg else dict(size=args.size, model=SIZES[args.size]))
  print(json.dumps(dict(devices=jax.device_count(), platform=jax.devices()[0].platform,
                        matmul_peak_gflop_s=round(peak / 1e9, 1), **what, results=results), indent=1))


if __name__ == "__main__":
  main()
