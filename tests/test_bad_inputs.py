"""Bad-input corpus (issue #6): every kind of bad input gets a clear error naming the file or value and the
problem, raised before any model is built, and nothing the user owns is touched.

Each case builds a small dataset in a standard layout, breaks one thing, feeds it to the trainer (in this
process: the same `train.run` the CLI calls), the command line or the completion command, and checks the
message and that every input file is byte for byte unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fixtures  # tests/fixtures.py
from maskseg_jax import config_base
from maskseg_jax import train
from maskseg_jax.errors import ConfigError, DataError, MasksegError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snapshot(root) -> dict[str, str]:
  """Relative path -> sha256 of every file under `root` (folders as '<dir>')."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for d in dirs:
      out[os.path.relpath(os.path.join(folder, d), root)] = "<dir>"
    for f in files:
      path = os.path.join(folder, f)
      with open(path, "rb") as fh:
        out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def load_config(name: str, arg: str | None = None, **overrides):
  return config_base.load_config(name, arg, overrides)


def trainer_config(**overrides):
  """The tiny supervised run; every item is decode-checked before training (validate_items=-1)."""
  base = {"data.crop_size": (32, 32), "data.eval_size": (64, 64), "data.batch_size": 8,
          "data.eval_batch_size": 8, "data.validate_items": -1, "model.width": 0.125, "train.steps": 2}
  return load_config("supervised.py", **{**base, **overrides})


def expect_error(error_type, fragments, fn, *args, **kwargs) -> str:
  with pytest.raises(error_type) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} not in: {message}"
  return message


# ------------------------------------------------------------------------------------ data through the trainer

def _break_folder(tmp, how):
  """A flat images/ + labels/ dataset (5 classes) with one file broken `how`; -> (root, fragments)."""
  info = fixtures.make_folder_fixture(tmp / "data", n=4, size=(36, 44), num_classes=5)
  root = info["root"]
  image, label = (os.path.join(root, d, f"img_001{e}") for d, e in (("images", ".png"), ("labels", ".png")))
  if how == "truncated_png_image":
    data = Path(image).read_bytes()
    Path(image).write_bytes(data[:len(data) // 2])
    return root, [image, "could not be decoded"]
  if how == "truncated_png_label":
    data = Path(label).read_bytes()
    Path(label).write_bytes(data[:len(data) // 3])
    return root, [label, "could not be decoded"]
  if how == "16bit_label":
    Image.fromarray(np.full((36, 44), 3, np.uint16)).save(label)
    return root, [label, "pixel mode 'I;16'", "8-bit"]
  if how == "rgb_label":
    Image.fromarray(np.zeros((36, 44, 3), np.uint8)).save(label)
    return root, [label, "pixel mode 'RGB'", "colour-coded"]
  if how == "label_values":
    Image.fromarray(np.full((36, 44), 99, np.uint8)).save(label)
    return root, [label, "values [99]", "outside 0..4"]
  if how == "size_mismatch":
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(label)
    return root, [label, "20x30 but the image is 36x44"]
  if how == "image_without_label":
    os.remove(label)
    return root, ["img_001.png", "have no label", os.path.join(root, "labels")]
  if how == "empty_folders":
    for d in ("images", "labels"):
      for f in os.listdir(os.path.join(root, d)):
        os.remove(os.path.join(root, d, f))
    return root, [os.path.join(root, "images"), "lists no images"]
  raise ValueError(how)


FOLDER_CASES = ["truncated_png_image", "truncated_png_label", "16bit_label", "rgb_label", "label_values",
                "size_mismatch", "image_without_label", "empty_folders"]


@pytest.mark.parametrize("how", FOLDER_CASES)
def test_broken_folder_dataset(tmp_path, how):
  root, fragments = _break_folder(tmp_path, how)
  before = snapshot(root)
  config = trainer_config(**{"data.name": "folder", "data.root": root, "data.num_classes": 5,
                             "data.train_split": "", "data.val_split": ""})
  expect_error(DataError, fragments, train.run, config, str(tmp_path / "w"))
  assert snapshot(root) == before
  assert not os.path.exists(tmp_path / "w" / "checkpoints")  # failed before training


def _voc(tmp):
  return fixtures.make_voc_fixture(tmp / "voc", n=4, val=2)


def test_corrupt_jpeg(tmp_path):
  info = _voc(tmp_path)
  path = os.path.join(info["root"], "JPEGImages", f"{info['train'][0]}.jpg")
  data = Path(path).read_bytes()
  Path(path).write_bytes(data[:20] + b"\x00garbage" * 50)  # a JPEG header, then junk
  before = snapshot(info["root"])
  config = trainer_config(**{"data.name": "voc", "data.root": info["root"], "data.num_classes": 21})
  expect_error(DataError, [path, "could not be decoded"], train.run, config, str(tmp_path / "w"))
  assert snapshot(info["root"]) == before


def test_split_file_problems(tmp_path):
  info = _voc(tmp_path)
  root = info["root"]
  sets = os.path.join(root, "ImageSets", "Segmentation")
  Path(sets, "missing.txt").write_text(f"{info['train'][0]}\n2007_999999\n")
  Path(sets, "empty.txt").write_text("\n# nothing here\n")
  Path(sets, "three.txt").write_text("a.jpg a.png extra\n")
  before = snapshot(root)
  cases = [("missing", ["2007_999999", "do not exist"]),  # a split entry without files
           ("empty", [os.path.join(sets, "empty.txt"), "lists no images"]),
           ("three", ["three.txt", "line 1 has 3 fields"]),
           ("nosuchsplit", ["nosuchsplit", "available", "train"])]
  for split, fragments in cases:
    config = trainer_config(**{"data.name": "voc", "data.root": root, "data.num_classes": 21,
                               "data.train_split": split})
    expect_error(DataError, fragments, train.run, config, str(tmp_path / "w"))
  assert snapshot(root) == before


def test_missing_root_unknown_dataset_and_class_count(tmp_path):
  missing = str(tmp_path / "nowhere" / "VOC2012")
  expect_error(DataError, [missing, "not found", "JPEGImages"], train.run,
               trainer_config(**{"data.name": "voc", "data.root": missing, "data.num_classes": 21}),
               str(tmp_path / "w"))
  expect_error(ConfigError, ["unknown data.name 'imagenet'", "synthetic"], train.run,
               trainer_config(**{"data.name": "imagenet"}), str(tmp_path / "w"))
  info = fixtures.make_cityscapes_fixture(tmp_path / "cs")
  before = snapshot(info["root"])
  expect_error(ConfigError, ["data.num_classes=21 but cityscapes has 19", "num_classes=19"], train.run,
               trainer_config(**{"data.name": "cityscapes", "data.root": info["root"], "data.num_classes": 21}),
               str(tmp_path / "w"))
  assert snapshot(info["root"]) == before


# ------------------------------------------------------------------------------------ contradictory configs

CONFIG_CASES = [
    ({"data.batch_size": 6}, ["data.batch_size=6", "multiple of the number of devices (8)"]),
    ({"data.eval_batch_size": 12}, ["data.eval_batch_size=12", "devices (8)"]),
    ({"data.crop_size": (0, 32)}, ["data.crop_size=(0, 32)", "two positive integers"]),
    ({"data.ignore_label": 3}, ["data.ignore_label=3 is also a class id", "num_classes=6"]),
    ({"data.std": (58.0, 0.0, 57.0)}, ["data.std=", "positive"]),
    ({"data.scale_range": (2.0, 0.5)}, ["data.scale_range=(2.0, 0.5)", "min <= max"]),
    ({"train.stop_at": 99}, ["train.stop_at=99", "1..train.steps=2"]),
    ({"train.on_nonfinite": "ignore"}, ["train.on_nonfinite='ignore'", "'stop' or 'skip'"]),
    ({"optim.lr": float("nan")}, ["optim.lr=nan", "positive finite"]),
    ({"train.checkpoint_every": 0}, ["train.checkpoint_every=0", "positive integer"]),
]


@pytest.mark.parametrize("overrides,fragments", CONFIG_CASES, ids=[next(iter(o)) for o, _ in CONFIG_CASES])
def test_contradictory_config(tmp_path, overrides, fragments):
  workdir = tmp_path / "w"
  expect_error(ConfigError, fragments, train.run, trainer_config(**overrides), str(workdir))
  assert not workdir.exists()  # checked before anything was made


def test_non_writable_workdir_in_process(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("user data")
  workdir = str(blocker / "run")  # a folder can never be made under a file (even as root)
  expect_error(ConfigError, [workdir, "is not writable", "--workdir"], train.run, trainer_config(), workdir)
  assert blocker.read_text() == "user data"


# ------------------------------------------------------------------------------------ the command line

def run_cli(module, args, cwd):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=600, check=False)


def test_cli_non_writable_workdir_fails_first(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("user data")
  r = run_cli("maskseg_jax.main", [f"--config={REPO}/configs/supervised.py",
                                   f"--workdir={blocker}/run"], tmp_path)
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert f"error: workdir {blocker}/run is not writable" in r.stderr
  assert blocker.read_text() == "user data"


def test_cli_unknown_config_key(tmp_path):
  r = run_cli("maskseg_jax.main", [f"--config={REPO}/configs/supervised.py",
                                   f"--workdir={tmp_path}/w", "--config.data.crop_sise=(32, 32)"], tmp_path)
  assert r.returncode != 0 and "crop_sise" in r.stderr
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------------ label completion

@pytest.fixture(scope="module")
def completer():
  """A real (untrained) tiny L-MAE: every completion error below comes before its first prediction."""
  from flax import nnx
  from maskseg_jax.methods.lmae import completion
  from maskseg_jax.methods import base
  from maskseg_jax.methods.lmae.model import build_lmae
  config = load_config("lmae.py", "synthetic")
  model = build_lmae(config.model, config.data.num_classes, nnx.Rngs(params=0, dropout=1))
  mdef, params, batch_stats = base.split_model(model)
  return completion.make_completer(config, mdef, params, batch_stats, name="tiny")


def _completion_folders(tmp, n=3):
  """images/ and labels/ (palette PNGs, 6 classes, some pixels 254 = unknown) of n pairs."""
  images, labels = tmp / "images", tmp / "labels"
  images.mkdir()
  labels.mkdir()
  rng = np.random.default_rng(0)
  for i in range(n):
    image, label = fixtures.random_scene(rng, (40, 52), 6, border=False)
    label[:8, :8] = 254
    Image.fromarray(image).save(images / f"p{i}.jpg", quality=95)
    fixtures._save_label(str(labels / f"p{i}.png"), label, palette=True)
  return str(images), str(labels)


def test_completion_folder_errors(tmp_path, completer):
  from maskseg_jax.methods.lmae import label_folder
  images, labels = _completion_folders(tmp_path)
  out = str(tmp_path / "out")
  empty = tmp_path / "empty"
  (empty / "images").mkdir(parents=True)
  (empty / "labels").mkdir()
  before = snapshot(tmp_path)
  expect_error(DataError, [labels, "is an input folder"], label_folder.complete_folder, images, labels, labels,
               [completer])
  os.rename(os.path.join(images, "p2.jpg"), os.path.join(tmp_path, "p2.jpg"))
  expect_error(DataError, [os.path.join(labels, "p2.png"), "has no image"], label_folder.complete_folder, images,
               labels, out, [completer])
  os.rename(os.path.join(tmp_path, "p2.jpg"), os.path.join(images, "p2.jpg"))
  expect_error(DataError, [str(empty / "images"), "no .jpg/.jpeg/.png image"], label_folder.complete_folder,
               str(empty / "images"), str(empty / "labels"), out, [completer])
  expect_error(MasksegError, [str(tmp_path / "not_a_run"), "config.json not found"], label_folder.complete_folder,
               images, labels, out, [str(tmp_path / "not_a_run")])
  os.makedirs(out)
  Path(out, "p1.png").write_text("an earlier result")
  expect_error(DataError, [os.path.join(out, "p1.png"), "refusing to overwrite"], label_folder.complete_folder,
               images, labels, out, [completer])
  assert Path(out, "p1.png").read_text() == "an earlier result"
  os.remove(os.path.join(out, "p1.png"))
  os.rmdir(out)
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["corrupt_image", "rgb_label", "label_values", "size_mismatch"])
def test_completion_bad_pair(tmp_path, completer, how):
  from maskseg_jax.methods.lmae import label_folder
  images, labels = _completion_folders(tmp_path, n=1)
  image, label = os.path.join(images, "p0.jpg"), os.path.join(labels, "p0.png")
  if how == "corrupt_image":
    Path(image).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    fragments = [image, "could not be decoded"]
  elif how == "rgb_label":  # a colour-coded label (palette converted to RGB): the ids are gone
    Image.open(label).convert("RGB").save(label)
    fragments = [label, "pixel mode 'RGB'"]
  elif how == "label_values":
    Image.fromarray(np.full((40, 52), 77, np.uint8)).save(label)
    fragments = [label, "values [77]", "0..5", "254 (unknown)"]
  else:
    Image.fromarray(np.zeros((20, 26), np.uint8)).save(label)
    fragments = [label, "20x26", "40x52"]
  before = snapshot(tmp_path)
  out = tmp_path / "out"
  expect_error(DataError, fragments, label_folder.complete_folder, images, labels, str(out), [completer])
  assert not out.exists() or not os.listdir(out)  # nothing written
  after = snapshot(tmp_path)
  after.pop("out", None)
  assert after == before


def test_completion_cli_reports_errors_without_traceback(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  r = run_cli("maskseg_jax.complete", [f"--images={images}", f"--labels={tmp_path / 'labels'}",
                                       f"--out={tmp_path / 'out'}", f"--model={tmp_path}"], tmp_path)
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert f"error: labels folder {tmp_path / 'labels'} not found" in r.stderr
  assert not (tmp_path / "out").exists()
