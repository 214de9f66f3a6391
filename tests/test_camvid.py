"""A short real-data run: supervised DeepLabV3+ on CamVid (../shared/data/camvid) learns."""

import json
import os

import pytest

from maskseg_jax import train
from maskseg_jax.data.sources import CAMVID_DEFAULT_ROOT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path, arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.skipif(not os.path.isdir(CAMVID_DEFAULT_ROOT), reason="../shared/data/camvid is not beside the checkout")
def test_camvid_short_run_learns(tmp_path):
  c = load_config("configs/supervised_camvid.py", "cpu")
  c.unlock()
  c.train.steps = 120
  c.train.log_every = 20
  c.train.eval_every = 120
  c.data.max_eval_images = 32
  c.lock()
  result = train.run(c, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert losses[-1] < 0.7 * losses[0], losses
  # Chance: 11 classes, uniform guessing gives ~0.05 mIoU and predicting road everywhere ~0.03.
  assert result["val/miou"] > 0.15, result
  assert sum(k.startswith("val/iou/") for k in result) >= 8
