"""Realistic label damage (maskseg_jax.methods.lmae.label_damage) and the real-holes score script against a hand computation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import ndimage

import fixtures
from maskseg_jax import config_base
from maskseg_jax.data import sources
from maskseg_jax.methods.lmae import completion, runs
from maskseg_jax.methods.lmae import label_damage as D
from test_lmae_experiments import cache_flag, load_experiment


def scene() -> np.ndarray:
  """48x64: a large class-1 region (stuff), 12 small 4x4 objects of classes 2..10, a void stripe, a class-0 band."""
  label = np.ones((48, 64), np.uint8)
  label[:8] = 0
  label[-2:] = 255
  for i in range(12):
    y, x = 12 + 12 * (i // 4), 4 + 16 * (i % 4)
    label[y:y + 4, x:x + 4] = 2 + i % 9
  return label


def test_damages_keep_given_pixels_and_are_fixed_by_seed():
  label = scene()
  for kind in D.DAMAGES:
    d = D.damage(kind, label, seed=3, image_id="a")
    given = d != D.UNKNOWN
    assert d.dtype == np.uint8 and (d == D.UNKNOWN).any(), kind
    assert np.array_equal(d[given], label[given]), kind  # only holes change
    assert (d[label == 255] == 255).all(), kind           # void is never a hole
    assert np.array_equal(d, D.damage(kind, label, seed=3, image_id="a")), kind
  for kind, params in (("blobs", {}), ("objects", {"fraction": 0.04})):  # 0.04: 7 of the 12 objects
    a = D.damage(kind, label, seed=3, image_id="a", **params)
    assert not np.array_equal(a, D.damage(kind, label, seed=4, image_id="a", **params)), kind
    assert not np.array_equal(a, D.damage(kind, label, seed=3, image_id="b", **params)), kind


def test_blobs_cover_the_fraction_and_are_smooth():
  label = scene()
  cls = int((label < 254).sum())
  d = D.damage("blobs", label, seed=0, image_id="a", fraction=0.25)
  hole = d == D.UNKNOWN
  assert hole.sum() == round(0.25 * cls)
  # Smooth blobs, not salt noise: as many random pixels make hundreds of pieces and almost no interior.
  salt = np.zeros(hole.size, bool)
  salt[np.random.default_rng(0).permutation(hole.size)[:hole.sum()]] = True
  salt = salt.reshape(hole.shape)
  assert ndimage.label(hole)[1] < 0.1 * ndimage.label(salt)[1]
  assert ndimage.binary_erosion(hole).sum() > 0.4 * hole.sum() > 100 * ndimage.binary_erosion(salt).sum()
  bigger = D.damage("blobs", label, seed=0, image_id="a", fraction=0.25, size=0.1) == D.UNKNOWN
  assert ndimage.label(bigger)[1] < ndimage.label(hole)[1]  # `size` sets the blob scale


def test_objects_remove_whole_small_components_up_to_the_fraction():
  label = scene()
  cls = int((label < 254).sum())
  d = D.damage("objects", label, seed=0, image_id="a", fraction=0.04)  # budget 112 px: 7 of the 4x4 objects
  hole = d == D.UNKNOWN
  assert hole.sum() == 7 * 16 and hole.sum() <= 0.04 * cls
  for part in D.components(label):
    assert hole[part].all() or not hole[part].any()  # whole instances or nothing
  assert not hole[label <= 1].any()                  # stuff larger than max_object stays


def test_thinned_boundaries_hit_boundary_pixels_only():
  label = scene()
  d = D.damage("boundaries", label, seed=0, image_id="a", width=1)
  hole = d == D.UNKNOWN
  cls = label < 254
  # Width 1: exactly the class pixels with a 4-neighbour of another class (void neighbours do not count).
  pad = np.pad(label, 1, constant_values=255)
  nbrs = [pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]]
  edge = cls & np.any([(n != label) & (n < 254) for n in nbrs], axis=0)
  assert np.array_equal(hole, edge)
  wide = D.damage("boundaries", label, seed=0, image_id="a", width=2) == D.UNKNOWN
  assert (wide & ~hole).any() and not (hole & ~wide).any()
  # Width 2, by brute force: class pixels with another class within Euclidean distance 2.
  h, w = label.shape
  expect = np.zeros_like(wide)
  for y, x in zip(*np.nonzero(cls)):
    expect[y, x] = any(0 <= y + dy < h and 0 <= x + dx < w and label[y + dy, x + dx] not in (label[y, x], 254, 255)
                       for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx <= 4)
  assert np.array_equal(wide, expect) and 0 < wide.sum() < 0.5 * cls.sum()


# --- the script -------------------------------------------------------------------------------------------
SYNTH = ["--config=lmae", "--config_arg=synthetic", "--set=data.synthetic.num_val=2",
         "--set=data.synthetic.image_size=(32, 32)"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A tiny synthetic L-MAE trained 2 steps (32 px input, patch 8), as tests/test_complete.py trains it."""
  return fixtures.train_tiny_lmae(str(tmp_path_factory.mktemp("lmae_run")))


def hand_scores(truth, pred, n):
  ious = []
  for c in range(n):
    inter = int(((truth == c) & (pred == c)).sum())
    union = int(((truth == c) | (pred == c)).sum())
    ious.append(inter / union if union else None)
  valid = [v for v in ious if v is not None]
  return sum(valid) / len(valid), float((truth == pred).mean()), ious


def test_real_holes_scores_equal_a_hand_computation(run_dir, tmp_path):
  results = str(tmp_path / "out" / "holes.md")
  report = load_experiment("lmae_real_holes").main(
      SYNTH + [f"--model={run_dir}", "--methods=model,nearest", "--damages=blobs,objects", "--limit=1",
               f"--results={results}", cache_flag()])
  config = config_base.load_config("lmae", "synthetic", {"data.synthetic.num_val": 2,
                                                            "data.synthetic.image_size": (32, 32)})
  src = sources.build_source(config.data, "val")
  item = src[0]
  n = src.num_classes
  name = "model:" + os.path.basename(run_dir)
  completer = runs.load_completer(run_dir, log=lambda s: None)
  assert report["images"] == 1
  for kind in ("blobs", "objects"):
    truth = item["label"]
    damaged = D.damage(kind, truth, seed=0, image_id=item["id"])
    hole = (damaged == 254) & (truth < 254)
    assert hole.any()
    known = damaged < 254
    _, (rows, cols) = ndimage.distance_transform_edt(~known, return_indices=True)
    nearest = damaged[rows, cols]
    model, _ = completion.complete_label([completer], item["image"], damaged, missing="unknown")
    assert np.array_equal(model[~hole], damaged[~hole])
    rows_ = report["results"][kind]["methods"]
    assert report["results"][kind]["hole_fraction"] == pytest.approx(hole.sum() / (truth < 254).sum())
    for method, pred in (("nearest", nearest), (name, model)):
      miou, acc, ious = hand_scores(truth[hole], pred[hole], n)
      got = rows_[method]
      assert got["hole_pixels"] == hole.sum()
      assert got["miou"] == pytest.approx(miou) and got["pixel_acc"] == pytest.approx(acc), (kind, method)
      assert [got["iou"][c] for c in src.class_names] == pytest.approx(ious)
    assert rows_[name]["margin_miou"] == pytest.approx(rows_[name]["miou"] - rows_["nearest"]["miou"])
    assert rows_[name]["best_fill"] == "nearest"
    assert 0 < rows_[name]["masked_fraction"] <= 1 and "masked_fraction" not in rows_["nearest"]
  md = open(results).read()
  assert f"--model={run_dir}" in md and report["markdown"] in md
  saved = json.load(open(str(tmp_path / "out" / "holes.json")))
  assert saved["results"] == json.loads(json.dumps(report["results"]))
  lines = report["markdown"].splitlines()
  assert lines[0].startswith("| damage | holes % of labelled | method | holes mIoU |")
  assert [line.split(" | ")[2] for line in lines[2:6]] == [name, "nearest", name, "nearest"]


def test_real_holes_tiny_fills_only(tmp_path):
  """Fills only (no model needed), every damage kind, the --tiny limit, a protocol parameter changed."""
  report = load_experiment("lmae_real_holes").main(
      SYNTH + ["--tiny", "--methods=nearest,geodesic", "--damage_set=boundaries.width=1", cache_flag()])
  assert report["images"] == 2  # --tiny takes 4, the split has 2
  assert report["damages"]["boundaries"] == {"width": 1}
  for kind in D.DAMAGES:
    rows = report["results"][kind]["methods"]
    assert set(rows) == {"nearest", "geodesic"} and "margin_miou" not in rows["nearest"]


def test_margins_are_over_the_best_fill_and_averaged_over_model_rows():
  rh = load_experiment("lmae_real_holes")
  rows = {"m1": {"miou": 0.6, "pixel_acc": 0.7}, "m2": {"miou": 0.4, "pixel_acc": 0.9},
          "nearest": {"miou": 0.5, "pixel_acc": 0.8}, "geodesic": {"miou": 0.45, "pixel_acc": 0.85}}
  out = rh.add_margins(rows, ["nearest", "geodesic"], ["m1", "m2"])
  assert out["m1"]["margin_miou"] == pytest.approx(0.1) and out["m2"]["margin_miou"] == pytest.approx(-0.1)
  assert out["m1"]["margin_pixel_acc"] == pytest.approx(-0.15)  # against geodesic, the best by pixel accuracy
  assert out["model_mean"]["miou"] == pytest.approx(0.5) and out["model_mean"]["half_range_miou"] == pytest.approx(0.1)
  assert out["model_mean"]["margin_miou"] == pytest.approx(0.0)
  rows = {"model:a": {"miou": 0.6, "pixel_acc": 0.7}, "model:b": {"miou": 0.4, "pixel_acc": 0.9},
          "hybrid:a": {"miou": 0.8, "pixel_acc": 0.9}, "hybrid:b": {"miou": 0.7, "pixel_acc": 0.9},
          "nearest": {"miou": 0.5, "pixel_acc": 0.8}}
  out = rh.add_margins(rows, ["nearest"], ["model:a", "model:b", "hybrid:a", "hybrid:b"])
  assert out["model_mean"]["miou"] == pytest.approx(0.5)  # each kind averaged over its own runs only
  assert out["hybrid_mean"]["miou"] == pytest.approx(0.75) and out["hybrid_mean"]["margin_miou"] == pytest.approx(0.25)
