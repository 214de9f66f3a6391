"""What a run shows a user: the start description, the eval line's order, eval progress, titled pictures with a
legend for every method, and mode=predict on a folder of the user's own images."""

from __future__ import annotations

import io
import os
import types

import numpy as np
import pytest
from PIL import Image

from maskseg_jax import config_base, metric_writer, run_info, train, visualize
from maskseg_jax.errors import DataError
from maskseg_jax.methods import base
from maskseg_jax.methods.lmae.evaluator import LMAEEvaluator
from maskseg_jax.methods.segmentation_eval import segmentation_picture
from maskseg_jax.methods.selective_masking.task import picture_rows, reconstruction_picture


def test_class_legend_names_void_unknown_and_masked():
  entries = visualize.class_legend(3, ["road", "car", "sky"], unknown=True, masked=True)
  assert [n for n, _ in entries] == ["road", "car", "sky", "void", "unknown", "masked"]
  colors = dict(entries)
  assert colors["void"] == visualize.VOID_COLOR and colors["unknown"] == visualize.UNKNOWN_COLOR
  assert colors["car"] == tuple(int(v) for v in visualize.palette()[1])
  assert [n for n, _ in visualize.class_legend(2)] == ["class 0", "class 1", "void"]
  np.testing.assert_array_equal(visualize.colorize(np.array([[254, 255]], np.uint8))[0],
                                [visualize.UNKNOWN_COLOR, visualize.VOID_COLOR])


def legend_swatches(picture: np.ndarray, below: int, color) -> int:
  """Pixels of `color` in the rows under the first `below` (where the legend is drawn)."""
  return int(np.all(picture[below:] == np.asarray(color, np.uint8), axis=-1).sum())


def test_every_method_picture_has_titles_and_a_legend():
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
  label = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
  label[:, :2] = 255
  grid_h = visualize.grid([[raw[0]] * 3] * 2).shape[0]
  # supervised and semi-supervised: image | prediction | truth
  seg = segmentation_picture(raw, label, label, 3, ["road", "car", "sky"])
  assert seg.shape[0] > grid_h + 12 + 10  # titles above, a legend row below
  assert legend_swatches(seg, grid_h + 12, visualize.palette()[2]) >= 80  # the "sky" swatch (10x10 minus outline)
  # L-MAE: image | given | L-MAE | truth, masked patches and void in the legend
  ev = types.SimpleNamespace(num_images=2, baselines=(), num_classes=3, class_names=None)
  local = {"label": label, "raw_image": raw, "valid": np.ones(2, bool)}
  mask_px = np.zeros((2, 16, 16), bool)
  mask_px[:, 8:] = True
  lmae = LMAEEvaluator._picture(ev, local, label, mask_px, {})
  assert lmae.shape[0] > visualize.grid([[raw[0]] * 4] * 2).shape[0] + 12
  assert legend_swatches(lmae, grid_h + 12, visualize.MASKED_COLOR) >= 80
  # selective masking: selected tiles | masked input | reconstruction, with the tile markings
  dc = types.SimpleNamespace(mean=(100.0, 110.0, 120.0), std=(50.0, 50.0, 50.0))
  rows = picture_rows(raw, mask_px, np.zeros((2, 16, 16, 3), np.float32), dc)
  sel = reconstruction_picture(rows, dc)
  assert sel.shape[0] > grid_h + 12
  assert legend_swatches(sel, grid_h + 12, visualize.SELECTED_COLOR) >= 80


def test_eval_line_puts_the_models_own_metric_first():
  lmae = ["val/miou", "val/geodesic/pa_miou", "val/pixel_acc", "val_random/pa_miou", "val/pa_miou",
          "val/nearest/miou", "val/margin_pa_miou", "val/geodesic/miou"]
  assert metric_writer.headline_order(lmae, ["val", "val_random"]) == [
      "val/pa_miou", "val/miou", "val/margin_pa_miou", "val/pixel_acc", "val_random/pa_miou",
      "val/geodesic/pa_miou", "val/geodesic/miou", "val/nearest/miou"]
  assert metric_writer.headline_order(["val/pixel_acc", "semi_diag/pl_acc", "val/miou"], ["val", "semi_diag"]) == [
      "val/miou", "val/pixel_acc", "semi_diag/pl_acc"]
  out = io.StringIO()
  writer = metric_writer.MetricWriter("unused", enabled=False)
  writer.enabled, writer.stream = True, out  # printing only: no files
  line = writer.eval_line(5, {"val/miou": 0.5, "val/iou/road": 0.1, "val/pa_miou": 0.25}, ["val"])
  assert line == "[eval step 5] val/pa_miou 0.2500  val/miou 0.5000" and out.getvalue() == line + "\n"


def test_eval_progress_reports_images_done_only_for_long_evals():
  lines = []
  batches = [{"valid": np.array([True] * 4)}, {"valid": np.array([True] * 4)}, {"valid": np.array([True, False])}]
  assert len(list(base.tracked(iter(batches), metric_writer.EvalProgress(lines.append, "val", 0.0), 9))) == 3
  assert [line.split(",")[0] for line in lines] == ["[eval val] 4/9 images", "[eval val] 8/9 images",
                                                    "[eval val] 9/9 images"]
  quiet = []
  list(base.tracked(iter(batches), metric_writer.EvalProgress(quiet.append, "val", 3600.0), 9))
  assert quiet == []  # a short evaluation prints nothing


def test_run_description_names_method_data_model_steps_overrides_and_workdir():
  config = config_base.load_config("lmae", "synthetic", {"train.steps": 7})
  lines = run_info.describe(config, "runs/x", ["--config.train.steps=7"])
  assert lines[0].startswith("run: lmae, mode train | data synthetic (6 classes) | model lmae tiny patch_size 8")
  assert "| 7 steps, batch 16, adam lr 0.001, seed 0" in lines[0]
  assert lines[1] == "lmae: mask_ratio 0.5"
  assert lines[2] == "overrides: --config.train.steps=7" and lines[3].startswith("workdir: runs/x")
  assert run_info.command_line_overrides(["x", "--config=a.py", "--config.seed=3", "--workdir=w"]) == [
      "--config.seed=3"]


def tiny_supervised(**overrides):
  base_overrides = {"data.synthetic.num_train": 8, "data.synthetic.num_val": 4,
                    "data.synthetic.image_size": (32, 32), "data.crop_size": (32, 32), "data.eval_size": (32, 32),
                    "data.batch_size": 8, "data.eval_batch_size": 8, "model.width": 0.125,
                    "model.backbone": "resnet18", "train.steps": 1, "train.num_images": 0}
  return config_base.load_config("supervised", None, {**base_overrides, **overrides})


def test_predict_on_a_folder_of_images(tmp_path):
  """An untrained tiny segmenter on two user images (one larger than data.eval_size, one .jpg): a palette PNG of
  class ids at each file's size, a preview with a legend, and no overwriting on a rerun."""
  photos = tmp_path / "photos"
  photos.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(photos / "big.png")
  Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(photos / "small.jpg")
  (photos / "notes.txt").write_text("not an image")
  out = tmp_path / "pred"
  config = tiny_supervised(**{"mode": "predict", "eval_untrained": True, "predict.images": str(photos),
                              "predict.out": str(out)})
  train.run(config, str(tmp_path / "run"))
  assert sorted(os.listdir(out)) == ["big.png", "preview", "small.png"]
  for stem, size in (("big", (40, 70)), ("small", (20, 24))):
    with Image.open(out / f"{stem}.png") as im:
      assert im.mode == "P" and im.size == size[::-1]
      assert np.asarray(im).max() < config.data.num_classes
    with Image.open(out / "preview" / f"{stem}.png") as im:
      assert im.height > size[0] + 12 and im.width >= 2 * size[1]  # titled, legend below
  with pytest.raises(DataError, match="already exists"):
    train.run(config, str(tmp_path / "run"))


def test_predict_folder_without_images_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  config = tiny_supervised(**{"mode": "predict", "eval_untrained": True, "predict.images": str(tmp_path / "empty")})
  with pytest.raises(DataError, match="holds no .jpg/.jpeg/.png image"):
    train.run(config, str(tmp_path / "run"))
