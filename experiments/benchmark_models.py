"""Train-step throughput of every segmentation model, as JSON.

  python experiments/benchmark_models.py [--size=cpu|paper] [--batch=8] [--steps=5]

For each model: images/s of the jitted supervised train step (sharded over all local devices), compile
seconds, and achieved FLOP/s (XLA's cost analysis of the compiled step / measured step time) as a fraction of
a float32 matrix-multiply peak measured in the same run. `cpu` sizes are what a 2-core machine can time in
a minute; `paper` sizes are the published widths (time them on an accelerator).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import config_base, optim, sharding
from maskseg_jax.methods import segmentation

SIZES = {
    "cpu": dict(width=0.25, crop=(128, 128), models={
        "deeplabv3plus": "resnet50", "unet": "resnet34", "fcn": "resnet50"}),
    "paper": dict(width=1.0, crop=(321, 321), models={
        "deeplabv3plus": "resnet101", "unet": "resnet34", "fcn": "resnet50"}),
}


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
  """Measured float32 FLOP/s of one large jitted matmul on the default device."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  per_device = 2 * n ** 3 * reps / (time.perf_counter() - t)
  return per_device


def timed_step(step, state, batch, steps: int):
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  state, m = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = compiled(state, batch, jax.random.fold_in(rng, i))
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t0) / steps
  return compile_s, step_s, flops


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", default="cpu", choices=sorted(SIZES))
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--models", default="")
  args = ap.parse_args()
  size = SIZES[args.size]
  mesh = sharding.make_mesh()
  peak = matmul_peak() * jax.local_device_count()
  results = []
  for name, backbone in size["models"].items():
    if args.models and name not in args.models.split(","):
      continue
    c = config_base.base_config()
    c.model.name, c.model.backbone, c.model.width = name, backbone, size["width"]
    c.data.num_classes = 21
    mdef, tx, state = segmentation.init_model_state(c, 21)
    step_fn = segmentation.supervised_step(mdef, tx, optim.learning_rate(c.optim, 100))
    from maskseg_jax.methods.base import Task
    from maskseg_jax import train
    step = train.compile_step(Task(state=state, train_step=step_fn, train_iter=None), mesh)
    h, w = size["crop"]
    rng = np.random.default_rng(0)
    batch = sharding.to_global({"image": rng.normal(size=(args.batch, h, w, 3)).astype(np.float32),
                                "label": rng.integers(0, 21, (args.batch, h, w)).astype(np.int32)}, mesh)
    compile_s, step_s, flops = timed_step(step, sharding.replicate(state, mesh), batch, args.steps)
    results.append(dict(model=name, backbone=backbone, width=size["width"], crop=[h, w], batch=args.batch,
                        images_per_s=round(args.batch / step_s, 2), step_s=round(step_s, 4),
                        compile_s=round(compile_s, 2), step_gflop=round(flops / 1e9, 2),
                        achieved_gflop_s=round(flops / step_s / 1e9, 2),
                        fraction_of_matmul_peak=round(flops / step_s / peak, 3)))
  print(json.dumps(dict(devices=jax.device_count(), platform=jax.devices()[0].platform,
                        matmul_peak_gflop_s=round(peak / 1e9, 1), size=args.size, results=results), indent=1))


if __name__ == "__main__":
  main()
