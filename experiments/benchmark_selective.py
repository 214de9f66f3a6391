"""Throughput of selective-masking pretraining, as JSON: the scoring pass and the reconstruction train step.

  python experiments/benchmark_selective.py [--size=cpu|paper] [--batch=16] [--steps=5]

Scoring images/s counts images scored (each is `num_draws` reconstructions plus the tile scores and top-k);
train images/s counts masked crops per second of the jitted `L1 + (1 - MS-SSIM)` step. Both run sharded over all
local devices, with compile seconds and achieved FLOP/s (XLA cost analysis / measured time). `cpu` is the
configs/selective.py:camvid,cpu setting; `paper` the authors' (time it on an accelerator).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_models import matmul_peak, timed_step  # noqa: E402  (sibling script)

from maskseg_jax import config_base, optim, sharding, train  # noqa: E402
from maskseg_jax.methods import base  # noqa: E402
from maskseg_jax.methods.selective_masking import scoring as selective_scoring  # noqa: E402
from maskseg_jax.methods.selective_masking import task as selective_masking  # noqa: E402
from maskseg_jax.methods.selective_masking.config import pretrain_defaults  # noqa: E402
from maskseg_jax.methods.selective_masking.tiles import TileGrid  # noqa: E402

SIZES = {
    "cpu": dict(width=0.25, crop=(64, 64), grid=8, ms_ssim=dict(ms_ssim_weights=(0.3, 0.3, 0.4), ms_ssim_window=7)),
    "paper": dict(width=1.0, crop=(256, 256), grid=21, ms_ssim={}),
}


def _cost(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def time_scoring(step, model_state, images, reps: int) -> tuple[float, float, float]:
  """(compile s, seconds per batch, flops per batch) of the jitted scorer."""
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = step.lower(model_state, images, rng).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(model_state, images, rng))
  t0 = time.perf_counter()
  for i in range(reps):
    out = compiled(model_state, images, jax.random.fold_in(rng, i))
  jax.block_until_ready(out)
  return compile_s, (time.perf_counter() - t0) / reps, _cost(compiled)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", default="cpu", choices=sorted(SIZES))
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--steps", type=int, default=5)
  args = ap.parse_args()
  size = SIZES[args.size]
  c = config_base.base_config()
  sel = pretrain_defaults(c, grid=size["grid"], **size["ms_ssim"])
  c.model.width = size["width"]
  c.data.crop_size = size["crop"]
  mesh = sharding.make_mesh()
  peak = matmul_peak() * jax.local_device_count()
  h, w = size["crop"]
  grid = TileGrid(h, w, size["grid"])
  mdef, params, batch_stats = selective_masking.init_model(c)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(args.batch, h, w, 3)).astype(np.float32)
  model_state = sharding.replicate({"params": params, "batch_stats": batch_stats}, mesh)

  score = selective_scoring.make_score_step(mdef, grid, sel, c.data, mesh)
  score_images = sharding.to_global({"image": images}, mesh)["image"]
  s_compile, s_time, s_flops = time_scoring(score, model_state, score_images, args.steps)

  tx = optim.make_optimizer(c.optim, 100, params)
  step_fn = selective_masking.reconstruction_step(mdef, tx, optim.learning_rate(c.optim, 100), c.data, sel)
  step = train.compile_step(base.Task(state=None, train_step=step_fn, train_iter=None), mesh)
  batch = sharding.to_global({"image": images, "target": images,
                              "mask": rng.uniform(size=(args.batch, h, w)) < 0.5}, mesh)
  state = sharding.replicate(base.new_state(params, batch_stats, tx), mesh)
  t_compile, t_time, t_flops = timed_step(step, state, batch, args.steps)

  row = lambda compile_s, sec, flops, **extra: dict(
      images_per_s=round(args.batch / sec, 2), batch_s=round(sec, 4), compile_s=round(compile_s, 2),
      batch_gflop=round(flops / 1e9, 2), achieved_gflop_s=round(flops / sec / 1e9, 2),
      fraction_of_matmul_peak=round(flops / sec / peak, 3), **extra)
  print(json.dumps(dict(
      devices=jax.device_count(), platform=jax.devices()[0].platform, matmul_peak_gflop_s=round(peak / 1e9, 1),
      size=args.size, model="unet/resnet34", width=size["width"], crop=[h, w], grid=size["grid"], batch=args.batch,
      scoring=row(s_compile, s_time, s_flops, num_draws=int(sel.num_draws)),
      train_step=row(t_compile, t_time, t_flops, ms_ssim_scales=len(sel.ms_ssim_weights))), indent=1))


if __name__ == "__main__":
  main()
