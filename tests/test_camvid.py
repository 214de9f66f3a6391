"""A short real-data run: supervised DeepLabV3+ on CamVid (../shared/data/camvid) learns."""

import json
import os

import fixtures
import pytest

from maskseg_jax import train
from maskseg_jax.data.file_layouts import CAMVID_DEFAULT_ROOT


@pytest.mark.skipif(not os.path.isdir(CAMVID_DEFAULT_ROOT), reason="../shared/data/camvid is not beside the checkout")
def test_camvid_short_run_learns(tmp_path):
  c = fixtures.load_config("configs/supervised.py", "camvid,cpu", **{
      "train.steps": 120, "train.log_every": 20, "train.eval_every": 120, "data.max_eval_images": 32})
  result = train.run(c, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert losses[-1] < 0.7 * losses[0], losses
  # Chance: 11 classes, uniform guessing gives ~0.05 mIoU and predicting road everywhere ~0.03.
  assert result["val/miou"] > 0.15, result
  assert sum(k.startswith("val/iou/") for k in result) >= 8
