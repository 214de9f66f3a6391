"""Throughput of the semi-supervised train step with every term on vs UniMatch alone, as JSON.

  python experiments/benchmark_semi.py [--size=cpu|paper|tiny] [--batch=8] [--steps=5] [--variants=unimatch,all]

One run, same model and crop for every variant: images/s (labeled + unlabeled images per second) of the jitted
step sharded over all local devices, step and compile seconds, XLA's FLOP count of the compiled step and the
achieved FLOP/s, plus each variant's cost relative to the first one. Batches are random arrays with the
shapes and dtypes of the real pipeline, so only the step is timed (the pipeline's strong augmentations run in
grain workers alongside it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_models  # noqa: E402  (sibling script: matmul_peak, timed_step)

from maskseg_jax import config_base, optim, sharding, train  # noqa: E402
from maskseg_jax.methods import base  # noqa: E402
from maskseg_jax.methods.semi_supervised import model as semi_model  # noqa: E402
from maskseg_jax.methods.semi_supervised import step as semi_step  # noqa: E402
from maskseg_jax.methods.semi_supervised import terms as semi_terms  # noqa: E402
from maskseg_jax.methods.semi_supervised.config import add_semi_section  # noqa: E402

SIZES = {
    "cpu": dict(backbone="resnet18", width=0.25, crop=(96, 96), patch=8, classes=11),
    "paper": dict(backbone="resnet101", width=1.0, crop=(321, 321), patch=32, classes=21),
    "tiny": dict(backbone="resnet18", width=0.125, crop=(32, 32), patch=8, classes=6),  # smoke tests only
}


def make_config(variant: str, size: dict, batch: int):
  c = config_base.base_config()
  c.method = "semi_supervised"
  c.data.num_classes = size["classes"]
  c.data.crop_size = size["crop"]
  c.data.batch_size = batch
  c.model.backbone, c.model.width = size["backbone"], size["width"]
  add_semi_section(c, variant, mim_patch=size["patch"], mask_patch=size["patch"])
  c.lock()
  return c


def random_batch(config, rng: np.random.Generator) -> dict:
  """A batch with the pipeline's keys, shapes and dtypes (CutMix boxes half on, no padding)."""
  b, (h, w), c = config.data.batch_size, config.data.crop_size, config.data.num_classes
  image = lambda: rng.normal(size=(b, h, w, 3)).astype(np.float32)  # noqa: E731
  box = np.zeros((b, h, w), bool)
  box[::2, h // 4:h // 2, w // 4:w // 2] = True
  return {"image": image(), "label": rng.integers(0, c, (b, h, w)).astype(np.int32), "u_image": image(),
          "u_image_s1": image(), "u_image_s2": image(), "u_cutmix_box1": box, "u_cutmix_box2": box[::-1].copy(),
          "u_ignore_mask": np.zeros((b, h, w), bool)}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", default="cpu", choices=sorted(SIZES))
  ap.add_argument("--batch", type=int, default=8, help="labeled batch (the unlabeled batch is the same)")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--variants", default="unimatch,all")
  args = ap.parse_args()
  size = SIZES[args.size]
  mesh = sharding.make_mesh()
  peak = benchmark_models.matmul_peak() * jax.local_device_count()
  results = []
  for variant in args.variants.split(","):
    config = make_config(variant, size, args.batch)
    terms = semi_terms.Terms.from_config(config)
    mdef, tx, state = semi_model.build_model_and_state(config, terms)
    step_fn = semi_step.make_train_step(mdef, tx, optim.learning_rate(config.optim, 100), terms)
    step = train.compile_step(base.Task(state=state, train_step=step_fn, train_iter=None), mesh)
    batch = random_batch(config, np.random.default_rng(0))
    if not terms.unlabeled:
      batch = {k: v for k, v in batch.items() if not k.startswith("u_")}
    images = args.batch * (2 if terms.unlabeled else 1)
    compile_s, step_s, flops = benchmark_models.timed_step(step, sharding.replicate(state, mesh),
                                                           sharding.to_global(batch, mesh), args.steps)
    results.append(dict(variant=variant, images_per_step=images, images_per_s=round(images / step_s, 2),
                        step_s=round(step_s, 4), compile_s=round(compile_s, 2), step_gflop=round(flops / 1e9, 2),
                        achieved_gflop_s=round(flops / step_s / 1e9, 2),
                        fraction_of_matmul_peak=round(flops / step_s / peak, 3)))
  for r in results:
    r["step_time_vs_first"] = round(r["step_s"] / results[0]["step_s"], 2)
    r["gflop_vs_first"] = round(r["step_gflop"] / max(results[0]["step_gflop"], 1e-9), 2)
  print(json.dumps(dict(devices=jax.device_count(), platform=jax.devices()[0].platform,
                        matmul_peak_gflop_s=round(peak / 1e9, 1), size=args.size, backbone=size["backbone"],
                        width=size["width"], crop=list(size["crop"]), batch=f"{args.batch}+{args.batch}",
                        results=results), indent=1))


if __name__ == "__main__":
  main()
