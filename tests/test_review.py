"""Completions a data team can review: a preview and a report per file beside the outputs, report.csv, the
model's confidence, RGB colour labels through a palette file, and the inputs never written."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from maskseg_jax import visualize
from maskseg_jax.data.sources import SyntheticSource
from maskseg_jax.errors import DataError
from maskseg_jax.methods.lmae import color_labels, completion, completion_methods, label_folder, review

N = 6
COLORS = {0: (0, 0, 0), 1: (128, 64, 128), 2: (244, 35, 232), 3: (70, 70, 70), 4: (102, 102, 156),
          5: (190, 153, 153), 254: (255, 0, 255), 255: (255, 255, 255)}


def write_rgb_pairs(root, n=2, size=(30, 44)):
  """Images and colour-coded labels (COLORS) with an unknown box; returns {stem: label values}."""
  src = SyntheticSource(n, size, N, seed=0, split="val")
  images, labels = os.path.join(root, "images"), os.path.join(root, "labels")
  os.makedirs(images)
  os.makedirs(labels)
  out = {}
  for i in range(n):
    ex = src[i]
    label = ex["label"].copy()
    label[5:15, 8:20] = 254
    Image.fromarray(ex["image"]).save(os.path.join(images, f"im{i}.png"))
    rgb = np.zeros(size + (3,), np.uint8)
    for v, c in COLORS.items():
      rgb[label == v] = c
    Image.fromarray(rgb).save(os.path.join(labels, f"im{i}.png"))
    out[f"im{i}"] = label
  return images, labels, out


def write_palette(path, kind="json"):
  if kind == "json":
    with open(path, "w") as f:
      json.dump({str(v): list(c) for v, c in COLORS.items()}, f)
  else:
    with open(path, "w") as f:
      f.write("# id r g b name\n" + "".join(f"{v} {c[0]},{c[1]},{c[2]} name{v}\n" for v, c in COLORS.items()))
  return str(path)


def digest(folder):
  return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest() for f in os.listdir(folder)}


@pytest.mark.parametrize("kind", ["json", "txt"])
def test_rgb_labels_round_trip_through_a_palette_file(tmp_path, kind):
  images, labels, truth = write_rgb_pairs(tmp_path)
  pal = write_palette(tmp_path / f"pal.{kind}", kind)
  before = digest(labels)
  out = tmp_path / "out"
  reports = label_folder.complete_folder(images, labels, str(out), method="geodesic", num_classes=N, palette=pal,
                                         log=lambda m: None)
  assert digest(labels) == before  # the inputs are never written
  decoded = color_labels.load_palette(pal)
  for r in reports:
    stem = r.name[:-4]
    with Image.open(out / r.name) as im:
      assert im.mode == "RGB"
      ids = color_labels.decode(np.asarray(im), decoded, r.name)
    given = truth[stem] != 254
    np.testing.assert_array_equal(ids[given], truth[stem][given])  # given pixels keep their colour and class
    assert not (ids == 254).any() and r.changed_pixels == int((~given).sum()) == 120
  if kind == "txt":
    assert decoded.names[3] == "name3"


def test_palette_formats_and_their_errors(tmp_path):
  cvat = tmp_path / "labelmap.txt"
  cvat.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nroad:128,64,128::\n")
  p = color_labels.load_palette(str(cvat))
  assert p.colors == {(0, 0, 0): 0, (128, 64, 128): 1} and p.names == {0: "background", 1: "road"}
  hexed = tmp_path / "hex.json"
  hexed.write_text('{"0": "#000000", "7": {"color": [1, 2, 3], "name": "pole"}}')
  assert color_labels.load_palette(str(hexed)).colors == {(0, 0, 0): 0, (1, 2, 3): 7}
  dup = tmp_path / "dup.txt"
  dup.write_text("0 1 2 3\n1 1 2 3\n")
  with pytest.raises(DataError, match=r"dup.txt line 2: colour \(1, 2, 3\) is already label value 0"):
    color_labels.load_palette(str(dup))
  with pytest.raises(DataError, match="palette file .*missing.json not found"):
    color_labels.load_palette(str(tmp_path / "missing.json"))
  with pytest.raises(DataError, match=r"out.png holds label value 1, which palette x gives no colour"):
    color_labels.encode(np.array([[0, 1]], np.uint8), p.__class__(path="x", colors={(0, 0, 0): 0}, names={}),
                        "out.png")


def test_unknown_colour_is_one_line_naming_file_colour_and_palette(tmp_path):
  images, labels, _ = write_rgb_pairs(tmp_path)
  small = tmp_path / "small.json"
  small.write_text(json.dumps({"0": [0, 0, 0], "254": [255, 0, 255]}))
  with pytest.raises(DataError) as e:
    label_folder.complete_folder(images, labels, str(tmp_path / "out"), method="geodesic", num_classes=N,
                                 palette=str(small), log=lambda m: None)
  msg = str(e.value)
  assert "\n" not in msg and os.path.join(labels, "im0.png") in msg and str(small) in msg
  assert "has colour (" in msg and "does not list" in msg
  assert not (tmp_path / "out").exists()  # nothing written
  with pytest.raises(DataError, match=r"has pixel mode 'RGB' \(a colour PNG\); pass --palette=FILE"):
    label_folder.complete_folder(images, labels, str(tmp_path / "out"), method="geodesic", num_classes=N,
                                 log=lambda m: None)


def test_review_writes_a_preview_and_a_report_per_file_and_report_csv(tmp_path):
  images, labels, truth = write_rgb_pairs(tmp_path, n=3)
  pal = write_palette(tmp_path / "pal.json")
  out = tmp_path / "out"
  label_folder.complete_folder(images, labels, str(out), method="nearest", num_classes=N, palette=pal,
                               log=lambda m: None)
  folder = out / review.REVIEW_DIR
  assert sorted(os.listdir(folder)) == ["im0.json", "im0.png", "im1.json", "im1.png", "im2.json", "im2.png",
                                        "report.csv"]
  row = json.load(open(folder / "im1.json"))
  assert row["method"] == "nearest" and row["filled_pixels"] == 120 and row["mean_confidence"] is None
  assert row["filled_fraction"] == pytest.approx(120 / (30 * 44)) and row["preview"] == str(folder / "im1.png")
  with Image.open(folder / "im1.png") as im:
    picture = np.asarray(im.convert("RGB"))
  # 30x44 files are shown 4x (at least half of PREVIEW_SIDE); four titled columns and a legend below
  assert picture.shape[1] >= 4 * 44 * 4 and picture.shape[0] > 30 * 4 + 12 + 10
  below = 12 + 30 * 4 + 4
  unknown = np.all(picture[below:] == np.asarray(COLORS[254], np.uint8), axis=-1).sum()
  assert unknown >= 80  # the unknown marker's swatch, in the file's own colour
  with open(folder / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["name"] for r in rows] == ["im0.png", "im1.png", "im2.png"]
  assert rows[0]["filled_pixels"] == "120" and rows[0]["method"] == "nearest"
  # A rerun into the same folder is refused: neither outputs nor review files are ever overwritten
  with pytest.raises(DataError, match="already exists"):
    label_folder.complete_folder(images, labels, str(out), method="nearest", num_classes=N, palette=pal,
                                 log=lambda m: None)
  for i in range(3):  # the labels gone, the review files still refuse
    os.remove(out / f"im{i}.png")
  with pytest.raises(DataError, match=r"review.im0.png already exists"):
    label_folder.complete_folder(images, labels, str(out), method="nearest", num_classes=N, palette=pal,
                                 log=lambda m: None)


def test_no_review_writes_only_the_labels(tmp_path):
  images, labels, _ = write_rgb_pairs(tmp_path)
  out = tmp_path / "out"
  label_folder.complete_folder(images, labels, str(out), method="nearest", num_classes=N,
                               palette=write_palette(tmp_path / "pal.json"), write_review=False, log=lambda m: None)
  assert sorted(os.listdir(out)) == ["im0.png", "im1.png"]


def test_confidence_is_the_softmax_probability_of_the_chosen_class():
  acc = np.zeros((2, 2, 3), np.float32)
  acc[0, 0] = (2.0, 0.0, 0.0)   # weight 2: logits (1, 0, 0)
  acc[0, 1] = (0.0, 0.0, 0.0)   # uniform
  weight = np.array([[2.0, 1.0], [1.0, 1.0]], np.float32)
  region = np.array([[True, True], [False, False]])
  conf = review.confidence_map(acc, weight, region)
  assert conf[0, 0] == pytest.approx(np.e / (np.e + 2)) and conf[0, 1] == pytest.approx(1 / 3)
  assert np.isnan(conf[1]).all()
  assert review.mean_confidence(conf, np.ones((2, 2), bool)) == pytest.approx((np.e / (np.e + 2) + 1 / 3) / 2)
  assert review.mean_confidence(None, region) is None


def stub_completer(margin: float) -> completion.Completer:
  """A 32x32 / patch-8 "model" whose logits favour class 3 by `margin`, masking exactly the forced patches."""
  def logits(image, label, force, given, k):
    mask = np.asarray(force).copy()
    extra = np.flatnonzero(~mask[0])[:16 - k - int(mask.sum())]
    mask[0, extra] = True
    out = np.zeros((1, 32, 32, N), np.float32)
    out[..., 3] = margin
    return out, mask
  return completion.Completer(name="stub", ratio=0.5, train_ratio=0.5, num_classes=N, patch_size=8,
                              image_size=(32, 32), background_classes=(0,), ignore_label=255, unknown_value=254,
                              mean=(0,) * 3, std=(1,) * 3, window=(64, 64), logits=logits)


def test_model_completion_reports_its_mean_confidence(tmp_path):
  """Deep inside a hole the stub's probability of class 3 is e^m / (e^m + 5); near the rim the given class's
  confident logits blend in, so the mean lies between that and 1 and grows with the margin."""
  images, labels, _ = write_rgb_pairs(tmp_path, size=(64, 64))
  pal = write_palette(tmp_path / "pal.json")
  means = []
  for m in (0.0, 3.0):
    out = tmp_path / f"out{m}"
    reports = label_folder.complete_folder(images, labels, str(out), [stub_completer(m)], method="model",
                                           palette=pal, log=lambda msg: None)
    inside = np.exp(m) / (np.exp(m) + N - 1)
    assert all(inside - 1e-6 <= r.mean_confidence <= 1.0 for r in reports)
    row = json.load(open(out / review.REVIEW_DIR / "im0.json"))
    assert row["mean_confidence"] == pytest.approx(reports[0].mean_confidence) and row["method"] == "model"
    means.append(reports[0].mean_confidence)
  assert means[0] < means[1]


def test_preview_highlights_exactly_the_filled_pixels():
  image = np.full((8, 8, 3), 200, np.uint8)
  label = np.zeros((8, 8), np.uint8)
  label[2:4, 2:4] = 254
  out = label.copy()
  out[2:4, 2:4] = 1
  pic = review.preview(image, label, out, side=8)  # no resizing at this side
  cell = pic[12 + 2:12 + 10, 3 * 10 + 2:3 * 10 + 10]  # the "filled" column (cells are 8 px + 2 px padding)
  filled = np.all(cell == visualize.palette()[1], axis=-1)
  np.testing.assert_array_equal(filled, out != label)
  assert (cell[~filled] == 70).all()  # the rest: the image dimmed


@pytest.mark.parametrize("method", ["model", "hybrid", "auto"])
def test_confidence_map_covers_exactly_the_pixels_the_model_filled(method):
  """model: every missing pixel has a confidence; hybrid and auto: the pixels their fills took have none."""
  src = SyntheticSource(1, (64, 64), N, seed=0, split="val")
  image, label = src[0]["image"], src[0]["label"].copy()
  label[12:52, 8:56] = 254  # 40 px thick: no thin gap for auto
  out, fields = completion_methods.pair_completer(method, [stub_completer(4.0)])(image, label, name="x")  # 92% sure
  conf = fields["confidence_map"]
  fillable = label == 254
  finite = np.isfinite(conf)
  assert not (finite & ~fillable).any() and ((conf[finite] > 0) & (conf[finite] <= 1)).all()
  if method == "model":
    np.testing.assert_array_equal(finite, fillable)
  else:
    assert 0 < finite.sum() < fillable.sum()
    filled_by_fill = fillable & ~finite
    fill = completion_methods.pair_completer("geodesic", num_classes=N)(image, label, name="x")[0]
    nearest = completion_methods.pair_completer("nearest", num_classes=N)(image, label, name="x")[0]
    assert ((out == fill) | (out == nearest))[filled_by_fill].all()  # those pixels are a fill's
