"""Label completion (`maskseg-complete`, `config.mode=complete`): which pixels are given, exact masking in static
buckets, given labels as confident logits beside a hole, tiles at the training field of view with bilinear
logits, non-learned fills, routing, file handling (palettes, staging, interrupted runs) and every bad input as a
one-line error."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import fixtures
from maskseg_jax import complete, train
from maskseg_jax.data.sources import SyntheticSource
from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.methods.lmae import completion, completion_methods, label_folder, runs
from maskseg_jax.methods.lmae import inference as inf

N = 6


tiny_config = fixtures.tiny_lmae_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """One tiny trained run (2 steps) shared by every test that loads a model from a workdir."""
  return fixtures.train_tiny_lmae(str(tmp_path_factory.mktemp("lmae_run")))


def write_pairs(root, n=3, size=(30, 44), palette=True, box=(slice(5, 15), slice(8, 20)), void=False, seed=0):
  """Synthetic images with incomplete labels (one class set to background, an unknown box, optional void)."""
  src = SyntheticSource(n, size, N, seed=seed, split="val")
  images, labels = os.path.join(root, "images"), os.path.join(root, "labels")
  os.makedirs(images)
  os.makedirs(labels)
  out = {}
  for i in range(n):
    ex = src[i]
    label = ex["label"].copy()
    label[label == 1 + i % (N - 1)] = 0
    if void:
      label[-3:, :] = 255
    if box is not None:
      label[box] = 254
    Image.fromarray(ex["image"]).save(os.path.join(images, f"im{i}.jpg"))
    fixtures._save_label(os.path.join(labels, f"im{i}.png"), label, palette)
    out[f"im{i}"] = label
  return images, labels, out


def read(path):
  with Image.open(path) as im:
    return np.asarray(im)


def spy(c: completion.Completer, calls: list) -> completion.Completer:
  """The same completer, recording (force, k, mask, given) of every model call."""
  inner = c.logits

  def logits(image, label, force, given, k):
    out = inner(image, label, force, given, k)
    calls.append((np.asarray(force[0]), k, np.asarray(out[1][0]), np.asarray(given[0])))
    return out

  c.logits = logits
  return c


# --- given pixels, exact masking, buckets, tiles ---------------------------------------------------------------
def test_completion_palette_given_pixels_unknown_and_counts(tmp_path, run_dir):
  images, labels, given = write_pairs(tmp_path)
  lines = []
  reports = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [run_dir], method="model",
                                         log=lines.append)
  assert [r.name for r in reports] == ["im0.png", "im1.png", "im2.png"]
  for r in reports:
    with Image.open(r.out_path) as im:
      assert im.mode == "P" and im.getpalette() == fixtures.voc_palette()
      out = np.asarray(im)
    label = given[r.name[:-4]]
    np.testing.assert_array_equal(out[label != 254], label[label != 254])  # every given pixel kept
    assert not (out == 254).any() and out.shape == label.shape and set(np.unique(out)) <= set(range(N))
    assert r.changed_pixels == int((out != label).sum()) == 10 * 12 and r.method == "model"
    assert any(line.startswith(f"{r.name}: 120 pixels changed (model ratio 0.5") for line in lines)
  images2, labels2, _ = write_pairs(tmp_path / "gray", n=1, palette=False)
  [r] = label_folder.complete_folder(images2, labels2, str(tmp_path / "gray_out"), [run_dir], log=lambda s: None)
  with Image.open(r.out_path) as im:
    assert im.mode == "L"


@pytest.mark.parametrize("missing", ["unknown", "unknown_and_void", "paper"])
def test_missing_option_says_which_pixels_are_given(tmp_path, run_dir, missing):
  images, labels, given = write_pairs(tmp_path, n=1, void=True)
  [r] = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [run_dir], missing=missing,
                                 log=lambda s: None)
  label, out = given["im0"], read(r.out_path)
  unknown, void = label == 254, label == 255
  fg = (label > 0) & (label < N)
  assert not (out == 254).any()
  np.testing.assert_array_equal(out[fg], label[fg])  # foreground: given in every mode
  if missing == "unknown":
    np.testing.assert_array_equal(out[~unknown], label[~unknown])    # void kept as void
    assert (out[void] == 255).all()
  elif missing == "unknown_and_void":
    np.testing.assert_array_equal(out[~unknown & ~void], label[~unknown & ~void])  # background kept
    assert not (out == 255).any()
  else:  # paper: background may be replaced too, Background-First at the model's budget (8 of 16 patches)
    assert r.masked_fraction == 0.5
    assert ((out != label) <= ~fg).all()


def test_exact_masking_hides_only_the_patches_that_hold_missing_pixels(tmp_path, run_dir):
  c = spy(runs.load_completer(run_dir, log=lambda s: None), calls := [])
  box = (slice(9, 13), slice(10, 14))
  images, labels, given = write_pairs(tmp_path, n=1, size=(32, 40), box=box)
  [r] = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [c], method="model",
                                     log=lambda s: None)
  [(force, k, mask, given_m)] = calls
  # The 32x40 file is one tile padded to the 40x40 field of view: the patches its 4x4 box maps to, no others.
  px = np.zeros((40, 40), bool)
  px[box] = True
  in_file = np.zeros((40, 40), bool)
  in_file[:32, :40] = True  # the model is told which pixels hold a given label: the file's, less the box
  np.testing.assert_array_equal(given_m, inf.resize_nearest(in_file & ~px, (32, 32)))
  np.testing.assert_array_equal(force, inf.patches_with(px, inf.model_patch_of_pixels((40, 40), (32, 32), 8), 16))
  assert 1 <= force.sum() <= 4 and (mask >= force).all()
  assert mask.sum() == inf.bucket(int(force.sum()), c.buckets) and k == 16 - mask.sum()
  assert r.masked_fraction == mask.sum() / 16 < 0.5 and r.changed_pixels == 16


def stub_completer(model_class: int, calls: list) -> completion.Completer:
  """A 32x32 / patch-8 "model" whose logits favour `model_class` by 1 everywhere; masks exactly the forced
  patches (plus the first others up to the bucket) and records (force, fed label, mask)."""
  def logits(image, label, force, given, k):
    mask = np.asarray(force).copy()
    extra = np.flatnonzero(~mask[0])[:16 - k - int(mask.sum())]
    mask[0, extra] = True
    calls.append((mask[0].copy(), np.asarray(label[0]), np.asarray(force[0])))
    out = np.zeros((1, 32, 32, N), np.float32)
    out[..., model_class] = 1.0
    return out, mask
  return completion.Completer(name="stub", ratio=0.5, train_ratio=0.5, num_classes=N, patch_size=8,
                            image_size=(32, 32), background_classes=(0,), ignore_label=255, unknown_value=254,
                            mean=(0,) * 3, std=(1,) * 3, window=(64, 64), logits=logits)


def test_given_labels_beside_a_hole_are_not_masked_and_lead_its_rim():
  """A 16x16 hole = model patch 5 of a 64x64 file (2 file pixels per model pixel) in a label of class 2; the
  model says class 3. Only patch 5 is masked; its neighbours stay visible, and their given class, as confident
  logits, wins the hole's one-pixel rim (its bilinear taps read 25-44% visible pixels), the model the inside.
  Masking the interpolation's neighbour patches (and using the model's logits there) gave class 3 throughout."""
  c = stub_completer(3, calls := [])
  label = np.full((64, 64), 2, np.uint8)
  label[16:32, 16:32] = 254
  image = np.zeros((64, 64, 3), np.uint8)
  out, fields = completion.complete_label([c], image, label, missing="unknown", scale="fit")
  [(mask, fed, force)] = calls
  assert np.flatnonzero(force).tolist() == [5] and np.flatnonzero(mask).tolist() == [5]
  assert fields["masked_fraction"] == 1 / 16 and (fed[8:16, 8:16] == 255).all()
  hole = out[16:32, 16:32]
  rim = np.ones((16, 16), bool)
  rim[1:-1, 1:-1] = False
  assert (hole[rim] == 2).all() and (hole[~rim] == 3).all()
  np.testing.assert_array_equal(out[label != 254], label[label != 254])


def test_given_logits_one_hot_at_visible_class_pixels_model_at_masked_no_vote_at_void():
  model = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
  label = np.array([[0, 3, 255], [1, 254, 2]])
  masked = np.array([[False, False, False], [True, False, False]])
  out = inf.given_logits(model, label, masked, 4)
  a = np.float32(inf.given_logit(4))
  np.testing.assert_allclose(np.exp(a) / (np.exp(a) + 3), inf.GIVEN_LEVEL, rtol=1e-6)  # softmax 99.9%
  np.testing.assert_array_equal(out[0, 0], [a, 0, 0, 0])
  np.testing.assert_array_equal(out[0, 1], [0, 0, 0, a])
  np.testing.assert_array_equal(out[1, 2], [0, 0, a, 0])
  np.testing.assert_array_equal(out[1, 0], model[1, 0])  # masked: the model's, even where a class is fed
  assert not out[0, 2].any() and not out[1, 1].any()    # void / unknown: no vote


def test_resize_bilinear_matches_jax_image_resize():
  rng = np.random.default_rng(0)
  for size, model in (((30, 44), (32, 32)), ((90, 100), (16, 24)), ((7, 9), (32, 32))):
    x = rng.random(model + (3,)).astype(np.float32)
    np.testing.assert_allclose(inf.resize_bilinear(x, size if size[0] > model[0] else model),
                               np.asarray(jax.image.resize(x, (size if size[0] > model[0] else model) + (3,),
                                                           "linear")), atol=1e-5)


def test_one_compile_per_bucket(tmp_path, run_dir):
  c = runs.load_completer(run_dir, log=lambda s: None)
  root = tmp_path / "data"
  images, labels, given = write_pairs(root, n=4, size=(32, 32), box=None)
  sizes = [(2, 2), (3, 3), (2, 3), (30, 30)]  # three small holes (same bucket), one nearly everything
  for i, (h, w) in enumerate(sizes):
    label = given[f"im{i}"].copy()
    label[1:1 + h, 1:1 + w] = 254
    fixtures._save_label(os.path.join(labels, f"im{i}.png"), label, True)
  reports = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [c], method="model",
                                         log=lambda s: None)
  used = {round(r.masked_fraction * 16) for r in reports}
  assert len(used) == 2 and sorted(c.traces) == sorted(16 - m for m in used)  # compiled once per bucket
  assert reports[3].masked_fraction == 15 / 16 and not (read(reports[3].out_path) == 254).any()


def test_tiles_at_the_training_field_of_view(tmp_path, run_dir):
  """The run saw 40x40 file pixels per 32x32 input: a 90x100 file is 3x3 tiles, `fit` is one resize."""
  images, labels, given = write_pairs(tmp_path, n=1, size=(90, 100), box=(slice(40, 70), slice(10, 90)))
  lines = []
  [r] = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [run_dir], method="model",
                                     log=lines.append)
  [f] = label_folder.complete_folder(images, labels, str(tmp_path / "fit"), [run_dir], method="model",
                                     scale="fit", log=lambda s: None)
  assert r.tiles == 9 and f.tiles == 1 and any(line.startswith("im0.png") and "9 tiles" in line for line in lines)
  for rep in (r, f):
    out = read(rep.out_path)
    label = given["im0"]
    np.testing.assert_array_equal(out[label != 254], label[label != 254])
    assert not (out == 254).any()
  # Bilinear logits at the file's resolution: the fill is not made of 40/32-px blocks of one class.
  assert (read(r.out_path) != read(f.out_path)).any()


def test_given_pixel_guard_raises_not_asserts(tmp_path, run_dir, monkeypatch):
  images, labels, _ = write_pairs(tmp_path, n=1)
  monkeypatch.setattr(inf, "compose", lambda label, pred, region: np.zeros_like(label))
  with pytest.raises(RuntimeError, match="changed .* given pixels"):
    label_folder.complete_folder(images, labels, str(tmp_path / "out"), [run_dir], log=lambda s: None)
  with pytest.raises(RuntimeError, match="changed .* given pixels"):
    label_folder.complete_folder(images, labels, str(tmp_path / "out2"), method="nearest", num_classes=N,
                                 log=lambda s: None)


def test_ratio_flag_warns_when_the_run_was_trained_at_another(tmp_path, run_dir):
  images, labels, _ = write_pairs(tmp_path, n=1)
  lines = []
  [r] = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [f"0.7={run_dir}"], log=lines.append)
  warn = [line for line in lines if line.startswith("warning:")]
  assert len(warn) == 1 and f"--model=0.7={run_dir}" in warn[0] and "trained at mask ratio 0.5" in warn[0]
  assert r.ratio == 0.7


# --- fills, routing, modes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nearest", "geodesic"])
def test_fill_methods_need_no_model(tmp_path, method, capsys):
  images, labels, given = write_pairs(tmp_path, n=2, void=True)
  complete.run_main(["--images", images, "--labels", labels, "--out", str(tmp_path / "out"),
                     f"--method={method}", f"--num_classes={N}"])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["files"] == 2 and printed["method"] == method
  for stem, label in given.items():
    with Image.open(tmp_path / "out" / f"{stem}.png") as im:
      assert im.getpalette() == fixtures.voc_palette()
      out = np.asarray(im)
    missing = (label == 254) | (label == 255)
    np.testing.assert_array_equal(out[~missing], label[~missing])
    assert set(np.unique(out[missing])) <= set(np.unique(label[~missing]))  # copied from given classes


@pytest.mark.parametrize("method", ["nearest", "geodesic"])
def test_fills_refuse_what_the_model_refuses(tmp_path, run_dir, method, capsys):
  """A fill checks label values like the model path: a value that is no class, void or the unknown marker (200
  here, without --unknown_value) is refused in one line naming the file, and nothing is written; without a
  class count (no --num_classes, no --model) the fill refuses to guess."""
  images, labels, given = write_pairs(tmp_path, n=1, box=None)
  label = given["im0"].copy()
  label[4:9, 5:12] = 200
  fixtures._save_label(os.path.join(labels, "im0.png"), label, True)
  for extra in ([f"--num_classes={N}"], [f"--model={run_dir}"]):
    out = tmp_path / f"out_{len(extra[0])}"
    with pytest.raises(SystemExit) as e:
      complete.run_main(["--images", images, "--labels", labels, "--out", str(out), f"--method={method}", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and not out.exists()
    assert "im0.png has values [200]" in err[0] and f"expected class ids 0..{N - 1}" in err[0]
  with pytest.raises(ConfigError, match=f"--method={method} needs the number of classes"):
    completion_methods.pair_completer(method)


def test_hybrid_takes_the_fill_near_given_pixels_and_the_model_elsewhere(tmp_path, run_dir):
  """--method=hybrid: missing pixels within the radius of a given class pixel = the geodesic fill's, the rest =
  the model's completion, given pixels kept; the default radius is half a model patch at the tile scale."""
  images, labels, given = write_pairs(tmp_path, n=1, box=(slice(2, 28), slice(3, 40)))
  image = read(os.path.join(images, "im0.jpg"))
  label = given["im0"]
  completers = runs.resolve_models([run_dir], "latest", print)
  c = completers[0]
  assert completion_methods.hybrid_radius(c, label.shape, "train") == pytest.approx(0.5 * 8 * 40 / 32)  # 40 px window
  model, _ = completion_methods.pair_completer("model", completers)(image, label, name="im0")
  fill, _ = completion_methods.pair_completer("geodesic", num_classes=N)(image, label, name="im0")
  missing = (label == 254) | (label == 255)
  for radius in (2.0, 6.0):
    out, report = completion_methods.pair_completer("hybrid", completers, radius=radius)(image, label, name="im0")
    known = ~missing
    near = missing & (ndimage_distance(known) <= radius)
    np.testing.assert_array_equal(out[near], fill[near])
    np.testing.assert_array_equal(out[missing & ~near], model[missing & ~near])
    np.testing.assert_array_equal(out[~missing], label[~missing])
    assert report["method"] == "hybrid" and report["fill_fraction"] == pytest.approx(near.sum() / missing.sum())
    assert 0 < near.sum() < missing.sum()  # both parts exercised
  with pytest.raises(ConfigError, match="--hybrid_radius=-1"):
    completion_methods.pair_completer("hybrid", completers, radius=-1.0)
  with pytest.raises(ConfigError, match="--method=hybrid needs a trained L-MAE"):
    completion_methods.pair_completer("hybrid")


def test_min_missing_masks_mostly_missing_patches_and_prefills_the_rest(tmp_path):
  """--min_missing=F: a patch is masked only when >= F of it is missing; the missing pixels of the others reach
  the model pre-filled by the geodesic fill and keep the fill's class in the output; F=0 masks both."""
  image = np.full((32, 32, 3), 100, np.uint8)
  label = np.full((32, 32), 2, np.uint8)
  label[16:, :] = 4
  label[0:8, 0:8] = 254      # patch 0: all missing
  label[9:11, 9:11] = 254    # patch 5: 4 of 64 pixels missing
  for f, masked_patches in ((0.5, [0]), (0.0, [0, 5])):
    calls = []
    c = dataclasses.replace(stub_completer(3, calls), window=(32, 32))
    out, report = completion_methods.pair_completer("model", [c], min_missing=f)(image, label, name="x")
    [(mask, fed, force)] = calls
    assert np.flatnonzero(force).tolist() == masked_patches
    np.testing.assert_array_equal(out[label != 254], label[label != 254])
    assert (out[0:8, 0:8] == 3).all()  # the model's class in the masked patch
    if f > 0:
      assert (fed[9:11, 9:11] == 2).all() and (out[9:11, 9:11] == 2).all()  # pre-filled, then kept
      assert report["prefilled_fraction"] == pytest.approx(4 / 68)
    else:
      assert (fed[9:11, 9:11] == 255).all() and (out[9:11, 9:11] == 3).all()
      assert "prefilled_fraction" not in report
  # the command: hybrid and min_missing reports reach the file reports
  root = str(tmp_path / "pairs")
  os.makedirs(os.path.join(root, "images"))
  os.makedirs(os.path.join(root, "labels"))
  Image.fromarray(image).save(os.path.join(root, "images", "x.png"))
  fixtures._save_label(os.path.join(root, "labels", "x.png"), label, False)
  c = dataclasses.replace(stub_completer(3, []), window=(32, 32))
  [r] = label_folder.complete_folder(os.path.join(root, "images"), os.path.join(root, "labels"),
                                     os.path.join(root, "out"), [c], method="hybrid", min_missing=0.5,
                                     log=lambda s: None)
  assert r.method == "hybrid" and r.prefilled_fraction == pytest.approx(4 / 68) and r.radius > 0
  assert (read(r.out_path)[0:8, 0:8] != 254).all()
  with pytest.raises(ConfigError, match="--min_missing=1.5"):
    completion_methods.pair_completer("model", [c], min_missing=1.5)
  with pytest.raises(ConfigError, match="--min_missing=0.5 needs --missing=unknown"):
    completion_methods.pair_completer("model", [c], missing="paper", min_missing=0.5)(image, label, name="x")


def ndimage_distance(known):
  from scipy import ndimage
  return ndimage.distance_transform_edt(~known)


def _fake(ratio, train_ratio=None):
  return completion.Completer(name=str(ratio), ratio=ratio, train_ratio=train_ratio or ratio, num_classes=N,
                            patch_size=8, image_size=(32, 32), background_classes=(0,), ignore_label=255,
                            unknown_value=254, mean=(0,) * 3, std=(1,) * 3, window=(32, 32), logits=None)


def test_routing_picks_the_smallest_sufficient_ratio():
  ratios = [0.7, 0.5, 0.6]
  pick = lambda need: ratios[completion.route(ratios, [need] * 3)]
  assert pick(0.05) == 0.5 and pick(0.5) == 0.5 and pick(0.55) == 0.6 and pick(0.65) == 0.7
  assert pick(0.9) == 0.7  # above every ratio: the largest
  assert ratios[completion.route(ratios, [0.8, 0.4, 0.9])] == 0.5  # each model's own need
  assert _fake(0.5).budget == 8 and _fake(0.75, 0.5).budget == 8  # the training ratio sets the budget


def test_routes_between_models_and_warns_once_about_huge_holes(tmp_path, run_dir):
  images, labels, given = write_pairs(tmp_path, n=2, size=(32, 32), box=None)
  small, big = given["im0"].copy(), given["im1"].copy()
  small[2:5, 2:5] = 254
  big[:, :28] = 254
  fixtures._save_label(os.path.join(labels, "im0.png"), small, True)
  fixtures._save_label(os.path.join(labels, "im1.png"), big, True)
  lines = []
  reports = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [(0.5, run_dir), f"0.9={run_dir}"],
                                     log=lines.append)
  assert reports[0].ratio == 0.5 and reports[1].ratio == 0.9 and reports[1].masked_fraction > 0.5
  warn = [line for line in lines if line.startswith("warning: 1 files")]
  assert len(warn) == 1 and "im1.png" in warn[0] and "ratio-0.5 model" in warn[0]
  assert not (read(reports[1].out_path) == 254).any()


def test_unknown_value_255_fills_void(tmp_path, run_dir):
  images, labels, given = write_pairs(tmp_path, n=1, box=None, void=True)
  [r] = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [run_dir], missing="unknown",
                                 unknown_value=255, log=lambda s: None)
  label, out = given["im0"], read(r.out_path)
  assert not (out == 255).any() and (out[label != 255] == label[label != 255]).all()


def test_complete_mode_and_cli(tmp_path, run_dir, capsys):
  images, labels, _ = write_pairs(tmp_path, n=1)
  out = str(tmp_path / "out_mode")
  result = train.run(tiny_config(**{"mode": "complete", "lmae.complete_images": images,
                                    "lmae.complete_labels": labels, "lmae.complete_out": out}), run_dir)
  assert result["complete/files"] == 1 and os.path.isfile(os.path.join(out, "im0.png"))
  complete.run_main(["--images", images, "--labels", labels, "--out", str(tmp_path / "out_cli"),
                     "--model", run_dir, "--checkpoint", "best"])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["files"] == 1 and printed["changed_pixels"] == result["complete/changed_pixels"]


# --- files: overwrite, midway failure, interrupted runs -----------------------------------------------------
def test_refuses_to_overwrite_and_names_bad_files(tmp_path, run_dir):
  images, labels, _ = write_pairs(tmp_path, n=2)
  out = tmp_path / "out"
  out.mkdir()
  (out / "im1.png").write_bytes(b"keep me")
  with pytest.raises(DataError, match=r"out/im1\.png already exists"):
    label_folder.complete_folder(images, labels, str(out), [run_dir])
  assert (out / "im1.png").read_bytes() == b"keep me" and not (out / "im0.png").exists()
  with open(os.path.join(labels, "im0.png"), "wb") as f:
    f.write(b"not a png")
  with pytest.raises(DataError, match=r"labels/im0\.png could not be decoded"):
    label_folder.complete_folder(images, labels, str(tmp_path / "o3"), [run_dir], log=lambda s: None)


def test_failing_midway_leaves_no_partial_output(tmp_path, run_dir):
  images, labels, _ = write_pairs(tmp_path, n=3)
  good = open(os.path.join(labels, "im2.png"), "rb").read()
  with open(os.path.join(labels, "im2.png"), "wb") as f:  # the last pair is broken: found only after 2 outputs
    f.write(good[: len(good) // 2])
  out = tmp_path / "out"
  with pytest.raises(DataError, match=r"labels/im2\.png"):
    label_folder.complete_folder(images, labels, str(out), [run_dir], log=lambda s: None)
  assert not out.exists()  # neither finished outputs nor the scratch folder (nor the new folder) are left
  with open(os.path.join(labels, "im2.png"), "wb") as f:
    f.write(good)
  reports = label_folder.complete_folder(images, labels, str(out), [run_dir], log=lambda s: None)
  assert sorted(os.listdir(out)) == ["im0.png", "im1.png", "im2.png", "review"] and len(reports) == 3


def test_later_run_removes_partial_folders_of_dead_runs_only(tmp_path):
  images, labels, _ = write_pairs(tmp_path, n=1)
  out = tmp_path / "out"
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  stale = out / f"{label_folder.PARTIAL_PREFIX}{int(dead.stdout)}_abc"  # as a SIGKILLed run leaves it
  legacy = out / f"{label_folder.PARTIAL_PREFIX}q1w2e3"                  # older versions: no pid
  live = out / f"{label_folder.PARTIAL_PREFIX}{os.getpid()}_xyz"         # a completion still running
  for d in (stale, legacy, live):
    d.mkdir(parents=True)
    (d / "im0.png").write_bytes(b"half")
  lines = []
  label_folder.complete_folder(images, labels, str(out), method="nearest", num_classes=N, log=lines.append)
  assert sorted(os.listdir(out)) == sorted(["im0.png", "review", live.name])
  assert sum("left by an interrupted completion" in line for line in lines) == 2


def test_sigterm_removes_the_partial_folder(tmp_path):
  images, labels, _ = write_pairs(tmp_path, n=1, size=(48, 48))
  for i in range(1, 400):  # enough pairs that the run is still going when the signal comes
    shutil.copy(os.path.join(images, "im0.jpg"), os.path.join(images, f"c{i}.jpg"))
    shutil.copy(os.path.join(labels, "im0.png"), os.path.join(labels, f"c{i}.png"))
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.Popen([sys.executable, "-m", "maskseg_jax.complete", f"--images={images}",
                           f"--labels={labels}", f"--out={out}", "--method=geodesic", f"--num_classes={N}"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not (out.is_dir() and any(f.name.startswith(".maskseg") for f in out.iterdir())
                                        and any(out.glob(".maskseg_partial_*/*.png"))):
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 143, err[-2000:]
  assert "error: interrupted by SIGTERM" in err and "Traceback" not in err
  assert not out.exists()


# --- bad input: one line, exit 2 ---------------------------------------------------------------------------
def _fake_run(tmp_path, run_dir, text):
  bad = tmp_path / "bad_run"
  bad.mkdir()
  (bad / "config.json").write_text(text if text is not None else "")
  return str(bad)


def _config_text(run_dir):
  with open(os.path.join(run_dir, "config.json")) as f:
    return f.read()


BAD_CASES = {
    # name: (extra argv builder(tmp, run, images, labels) -> argv changes, key words)
    "out_is_file": (lambda t, r, i, l: {"out": str(t / "a_file")}, ["a_file", "is an existing file",
                                                                    "expected a folder"]),
    "out_is_labels": (lambda t, r, i, l: {"out": l}, ["is an input folder (labels)"]),
    "out_inside_labels": (lambda t, r, i, l: {"out": os.path.join(l, "done")}, ["inside the labels folder"]),
    "out_inside_images": (lambda t, r, i, l: {"out": os.path.join(i, "x", "done")},
                          ["inside the images folder"]),
    "config_malformed": (lambda t, r, i, l: {"model": [_fake_run(t, r, "{'method': lmae")]},
                         ["config.json is not valid JSON", "line 1"]),
    "config_list": (lambda t, r, i, l: {"model": [_fake_run(t, r, "[1, 2]")]},
                    ["config.json holds a JSON list", "expected an object"]),
    "config_truncated": (lambda t, r, i, l: {"model": [_fake_run(t, r, _config_text(r)[:300])]},
                         ["config.json is not valid JSON", "cut short"]),
    "config_empty": (lambda t, r, i, l: {"model": [_fake_run(t, r, None)]}, ["config.json is not valid JSON",
                                                                             "empty or cut short"]),
    "config_lacks_field": (lambda t, r, i, l: {"model": [_fake_run(t, r, json.dumps(
        {k: v for k, v in json.loads(_config_text(r)).items() if k != "lmae"}))]}, ["lacks lmae.mask_ratio"]),
    "ratio_zero": (lambda t, r, i, l: {"model": [f"0={r}"]}, ["--model=0=", "ratio 0 is out of range", "(0, 1)"]),
    "ratio_nan": (lambda t, r, i, l: {"model": [f"nan={r}"]}, ["ratio nan is out of range"]),
    "same_ratio_twice": (lambda t, r, i, l: {"model": [r, f"0.5={r}"]}, ["two models at mask ratio 0.5",
                                                                        "one model per ratio"]),
    "unknown_is_a_class": (lambda t, r, i, l: {"extra": ["--unknown_value=3"]},
                           ["unknown_value=3 is class id 3", "0..5", "--unknown_value=254"]),
    "unknown_255_with_254s": (lambda t, r, i, l: {"extra": ["--unknown_value=255"]},
                              ["values [254]", "255 (void, which --unknown_value=255 also makes the unknown",
                               "pass --unknown_value=254"]),
    "fill_with_paper_missing": (lambda t, r, i, l: {"model": [], "extra": ["--method=nearest", "--missing=paper"]},
                                ["--missing=paper", "--method=nearest needs"]),
    "model_method_without_model": (lambda t, r, i, l: {"model": []}, ["--method=auto needs a trained L-MAE"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_error(tmp_path, run_dir, capsys, case):
  images, labels, _ = write_pairs(tmp_path, n=1)
  (tmp_path / "a_file").write_text("user data")
  build, words = BAD_CASES[case]
  args = {"out": str(tmp_path / "out"), "model": [run_dir], "extra": []}
  args.update(build(tmp_path, run_dir, images, labels))
  argv = ["--images", images, "--labels", labels, "--out", args["out"], *args["extra"]]
  argv += [f"--model={m}" for m in args["model"]]
  with pytest.raises(SystemExit) as e:
    complete.run_main(argv)
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
  for w in words:
    assert w in err, (w, err)
  assert "255 (void) or 255 (unknown)" not in err
  assert (tmp_path / "a_file").read_text() == "user data" and not (tmp_path / "out").exists()
  assert not os.path.exists(os.path.join(labels, "done"))


def test_nothing_to_fill_is_copied_without_running_the_model(tmp_path, run_dir):
  c = runs.load_completer(run_dir, log=lambda s: None)
  images, labels, given = write_pairs(tmp_path, n=1, box=None)
  lines = []
  [r] = label_folder.complete_folder(images, labels, str(tmp_path / "out"), [c], missing="unknown",
                                 log=lines.append)
  assert (r.changed_pixels, r.tiles, r.ratio, c.traces) == (0, 0, 0.5, [])
  assert "nothing to fill" in lines[0] and (read(r.out_path) == given["im0"]).all()


def test_completion_benchmark_reports_images_per_second(tmp_path, run_dir):
  sys.path.insert(0, os.path.join(fixtures.REPO, "experiments"))
  import benchmark_lmae
  images, labels, _ = write_pairs(tmp_path, n=2)
  args = benchmark_lmae.argparse.Namespace(images=images, labels=labels, model=[run_dir],
                                           methods="model,nearest", missing="unknown_and_void", scale="train",
                                           num_classes=None)
  out = benchmark_lmae.completion_benchmark(args)
  rows = {r["method"]: r for r in out["results"]}
  assert set(rows) == {"model", "nearest"} and rows["model"]["compiles"] == 1
  for r in rows.values():
    assert r["files"] == 2 and r["images_per_s"] > 0 and r["changed_pixels"] == 2 * 120
  assert json.dumps(out)


# --- auto: each hole by its shape ---------------------------------------------------------------------------
def _three_holes():
  """64x64: class 1 left / class 2 right (image dark / bright); a 2-px band on the class boundary (thin), a
  20x20 square whose outline is an edge of the image (a missing object), a 24x22 hole in a flat area (a blob)."""
  label = np.where(np.arange(64)[None, :] < 32, 1, 2).repeat(64, 0).astype(np.uint8)
  image = np.where(label[..., None] == 1, 20, 200).repeat(3, -1).astype(np.uint8)
  image[34:54, 4:24] = 120
  label[0:16, 31:33] = 254
  label[34:54, 4:24] = 254
  label[38:62, 38:60] = 254
  return image, label


def test_hole_routes_by_thickness_and_outline_edges():
  from maskseg_jax.methods.lmae import hole_routes as H
  image, label = _three_holes()
  routes, holes = H.route_pixels(label == 254, image)
  assert len(np.unique(holes[label == 254])) == 3 and (holes[label != 254] == 0).all()
  assert (routes[0:16, 31:33] == H.THIN).all() and (routes[34:54, 4:24] == H.OBJECT).all()
  assert (routes[38:62, 38:60] == H.BLOB).all() and (routes[label != 254] == 0).all()
  _, f = H.hole_features(label == 254, image)
  assert sorted(f["area"].tolist()) == [32, 400, 528] and f["edge"].min() == 0.0  # the blob's outline is flat
  # The rule's thresholds decide: no hole is thin below a thickness of 0.5, every thick one a blob at ratio inf.
  strict, _ = H.route_pixels(label == 254, image, H.HoleRule(thin_px=0.5, sliver_px=0.0, edge_ratio=np.inf))
  assert set(np.unique(strict[label == 254])) == {H.BLOB}
  band, _ = H.route_pixels(label == 254, image, H.HoleRule(min_elongation=100.0, sliver_px=0.0))  # too short to
  assert (band[0:16, 31:33] == H.OBJECT).all()  # be a band; its outline is the image's edge: an object candidate
  sliver, _ = H.route_pixels(label == 254, image, H.HoleRule(min_elongation=100.0, sliver_px=1.0))
  assert (sliver[0:16, 31:33] == H.THIN).all() and (sliver[34:54, 4:24] == H.OBJECT).all()  # 1 px thick: thin
  # An object candidate stays one only where the model shows a class its rim lacks (rim: class 1 here).
  known = label != 254
  for predicted_class, expected in ((3, H.OBJECT), (1, H.BLOB)):
    predicted = np.where(known, label, predicted_class)
    confirmed = H.confirm_objects(routes, holes, predicted, label, known)
    assert (confirmed[34:54, 4:24] == expected).all() and (confirmed[38:62, 38:60] == H.BLOB).all()


def test_auto_fills_thin_gaps_models_objects_and_hybrids_blobs():
  """auto = nearest fill on the thin band, the model (class 3) inside the object, on the blob the geodesic fill
  within the radius of given pixels and the model deeper in; given pixels kept; one model pass."""
  from maskseg_jax.methods.lmae import fills
  image, label = _three_holes()
  from maskseg_jax.methods.lmae import hole_routes as H
  c = dataclasses.replace(stub_completer(3, calls := []), window=(64, 64))
  trusting = H.HoleRule(blob_confidence=0.0)  # the stub is only 35% sure: keep its labels deep in the blob
  out, report = completion_methods.pair_completer("auto", [c], missing="unknown", scale="fit", rule=trusting)(
      image, label, name="x")
  known = label != 254
  nearest = fills.nearest_fill(label, known)
  np.testing.assert_array_equal(out[0:16, 31:33], nearest[0:16, 31:33])
  assert (out[0:16, 31] == 1).all() and (out[0:16, 32] == 2).all()
  assert (out[38:50, 8:20] == 3).all()                       # the object's inside: the model's class
  r = completion_methods.hybrid_radius(c, label.shape, "fit")
  near = (label == 254) & (ndimage_distance(known) <= r)
  assert (out[near & (np.arange(64)[None, :] >= 38)] == 2).all()  # the blob's rim: the fill (class 2 around)
  assert (out[49:52, 49:52] == 3).all()                      # deep inside, in a patch mostly missing: the model
  np.testing.assert_array_equal(out[known], label[known])
  assert len(calls) == 1 and report["method"] == "auto"
  assert sum(report["hole_routes"].values()) == pytest.approx(1.0)
  assert report["hole_routes"]["object"] == pytest.approx(400 / 960)
  # The object's patches are masked whole; the thin band's never (it reaches the model pre-filled).
  [(mask, fed, force)] = calls
  assert force.reshape(4, 4)[2:, :2].all() and not force.reshape(4, 4)[0, 1:3].any()
  assert (fed[0:8, 15:17] != 255).all()
  # A model that puts the rim's own class into the object candidate: the hole is treated as a blob.
  c1 = dataclasses.replace(stub_completer(1, []), window=(64, 64))
  _, report = completion_methods.pair_completer("auto", [c1], missing="unknown", scale="fit")(image, label, name="x")
  assert report["hole_routes"]["object"] == 0 and report["hole_routes"]["blob"] == pytest.approx(928 / 960)



def test_auto_keeps_the_blob_fill_where_the_model_is_unsure():
  """rule.blob_confidence: deep in a blob the model's label only where its confidence (the stub's: e / (e + 5)
  = 0.35) reaches it, else the blob's geodesic fill; objects keep the model's label at any confidence."""
  from maskseg_jax.methods.lmae import hole_routes as H
  image, label = _three_holes()
  c = dataclasses.replace(stub_completer(3, []), window=(64, 64))
  for bar, deep_blob in ((0.3, 3), (0.4, 2)):
    complete_pair = completion_methods.pair_completer("auto", [c], missing="unknown", scale="fit",
                                              rule=H.HoleRule(blob_confidence=bar))
    out, report = complete_pair(image, label, name="x")
    assert (out[49:52, 49:52] == deep_blob).all() and (out[38:50, 8:20] == 3).all(), bar
    assert np.isnan(report["confidence_map"][49:52, 49:52]).all() == (deep_blob == 2)


def test_selection_script_scores_variants_on_a_copy(tmp_path, run_dir):
  """experiments/lmae_select.py: each variant is an eval of a scratch copy (the run folder is never written);
  the run's own settings reproduce its eval; an evaluation-time change (the fill blend) changes the score."""
  sys.path.insert(0, os.path.join(fixtures.REPO, "experiments"))
  import lmae_select
  before = {f: os.path.getmtime(os.path.join(run_dir, f)) for f in os.listdir(run_dir)}
  name, overrides = lmae_select.parse_variant("blend=lmae.fill_blend=0.9;lmae.mirror_average=False")
  assert (name, overrides) == ("blend", {"lmae.fill_blend": 0.9, "lmae.mirror_average": False})
  results = lmae_select.select([run_dir], "val", [("as_trained", {}), ("again", {}), (name, overrides)],
                               tiny_config())
  assert results["as_trained"] == results["again"] and results["blend"] != results["as_trained"]
  s = results["as_trained"][0]
  assert s["score"] == pytest.approx((s["val/margin_pa_miou"] + s["val_random/margin_pa_miou"]) / 2)
  assert s["val/margin_pa_miou"] == pytest.approx(s["val/pa_miou"] - s["val/best_fill_pa_miou"])
  lines = lmae_select.table(results, [run_dir])
  assert len(lines) == 5 and lines[0].startswith("| variant")
  assert {f: os.path.getmtime(os.path.join(run_dir, f)) for f in os.listdir(run_dir)} == before
  with pytest.raises(SystemExit, match="NAME=KEY=VALUE"):
    lmae_select.parse_variant("nokey")


def test_run_settings_override_is_evaluation_time_only(run_dir):
  """Experiments score a run with other evaluation-time settings (lmae.*); fields that change the model, the
  completion command's own fields and unknown names are refused in one line naming the key."""
  config = runs.override_eval_settings(runs.read_run_config(run_dir), {"lmae.fill_blend": 0.5,
                                                                      "lmae.progressive_reveal": ()})
  assert config.lmae.fill_blend == 0.5 and tuple(config.lmae.progressive_reveal) == ()
  for key in ("model.enc_dim", "lmae.complete_out", "lmae.no_such_field"):
    with pytest.raises(ConfigError, match=f"run setting {key}="):
      runs.override_eval_settings(runs.read_run_config(run_dir), {key: 1})
  c = runs.load_completer(run_dir, log=lambda s: None, overrides={"lmae.mirror_average": True})
  assert c.num_classes == N
