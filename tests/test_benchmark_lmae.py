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
