"""The L-MAE benchmark script runs and reports fewer FLOPs per step at higher mask ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_lmae_prints_json_with_falling_flops():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "benchmark_lmae.py"), "--size=tiny",
                      "--steps=1", "--ratios=0,0.75"], env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads(r.stdout)
  full, masked = out["results"]
  assert (full["visible_patches"], masked["visible_patches"]) == (16, 4)
  assert 0 < masked["step_gflop"] < full["step_gflop"] and masked["flops_vs_first"] < 1.0
  for row in out["results"]:
    assert row["images_per_s"] > 0 and row["compile_s"] > 0


def _benchmark_module():
  import importlib.util
  spec = importlib.util.spec_from_file_location("benchmark_lmae", os.path.join(REPO, "experiments",
                                                                               "benchmark_lmae.py"))
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  spec.loader.exec_module(module)
  return module


def test_benchmark_lmae_times_a_named_config_with_overrides():
  """--config_arg/--set build the recipe's config at each ratio (the timing path is the --size one)."""
  import pytest
  bench = _benchmark_module()
  sets = bench.parse_sets(["model.prior=nearest", "model.refine_width=16", "model.image_size=(32, 40)"])
  assert sets == {"model.prior": "nearest", "model.refine_width": 16, "model.image_size": (32, 40)}
  for ratio in (0.0, 0.75):
    c = bench.named_config_for("lmae", "camvid,cpu", ratio, sets)
    assert c.lmae.mask_ratio == ratio and (c.model.prior, c.model.refine_width) == ("nearest", 16)
    assert tuple(c.model.image_size) == (32, 40) and c.data.num_classes == 11
  with pytest.raises(SystemExit, match="--set needs --config_arg"):
    bench.main(["--set", "model.prior=nearest"])
  with pytest.raises(SystemExit, match="KEY=VALUE"):
    bench.parse_sets(["model.prior"])
