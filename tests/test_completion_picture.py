"""experiments/completion_picture.py (the README's picture): holes drawn in the given column only, filled in the
model's and the fill's columns, one row per damage kind; a missing data folder is a one-line error."""

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

import fixtures
from maskseg_jax import visualize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 96, 128


def load_picture_script():
  spec = importlib.util.spec_from_file_location("completion_picture", os.path.join(REPO, "experiments",
                                                                                  "completion_picture.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def fake_camvid(root, n=2):
  """A VOC-layout folder: road below, sky above, small boxes (objects the damage can remove), a void strip."""
  rng = np.random.default_rng(0)
  for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    os.makedirs(root / sub)
  stems = [f"f{i}" for i in range(n)]
  for stem in stems:
    label = np.zeros((H, W), np.uint8)
    label[H // 2:] = 3
    for _ in range(4):
      y, x = rng.integers(4, H - 16), rng.integers(4, W - 16)
      label[y:y + 12, x:x + 12] = rng.integers(1, 6)
    label[:, :2] = 255
    image = (rng.random((H, W, 3)) * 60 + label[..., None] * 30).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg")
    fixtures._save_label(str(root / "SegmentationClass" / f"{stem}.png"), label, True)
  (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems) + "\n")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A 2-step synthetic L-MAE (6 classes, 32 px input): enough to complete files, not to complete them well."""
  return fixtures.train_tiny_lmae(str(tmp_path_factory.mktemp("picture_run")))


def test_picture_marks_holes_in_the_given_column_only(tmp_path, tiny_run):
  pic = load_picture_script()
  fake_camvid(tmp_path / "camvid")
  out = pic.main([f"--model={tiny_run}", f"--data={tmp_path / 'camvid'}", "--per_damage=1", "--stride=1",
                  f"--out={tmp_path / 'p.png'}"])
  picture = np.asarray(Image.open(out).convert("RGB"))
  h, w, pad, title_h = H // 2, W // 2, 2, 12
  assert picture.shape[1] == len(pic.COLUMNS) * (w + pad) + pad
  missing = np.array(visualize.UNKNOWN_COLOR, np.uint8)

  def cell(row, col):
    y, x = title_h + pad + row * (h + pad), pad + col * (w + pad)
    return picture[y:y + h, x:x + w]

  for row in range(len(pic.ROWS)):
    holes = [int((cell(row, col) == missing).all(-1).sum()) for col in range(1, len(pic.COLUMNS))]
    assert holes[0] > 0 and holes[1:] == [0, 0, 0], holes  # given: holes; L-MAE, geodesic fill, truth: none


def test_missing_data_folder_is_a_one_line_error(tmp_path):
  pic = load_picture_script()
  with pytest.raises(SystemExit, match="val.txt; expected the CamVid VOC layout"):
    pic.main(["--model=unused", f"--data={tmp_path}"])
