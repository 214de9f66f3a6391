"""L-MAE method end to end on tiny synthetic data: train step, metrics regions, class frequencies, the loop
(save, resume, eval), sharding, configs. Label completion: tests/test_complete.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskseg_jax import config_base
from maskseg_jax import metrics, sharding, train
from maskseg_jax.data.sources import SyntheticSource
from maskseg_jax.methods import get_method
from maskseg_jax.methods.lmae import inference as inf
from maskseg_jax.methods.lmae import patch_masks as P

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 6


def load_config(name: str, arg: str | None = None):
  return config_base.load_config(name, arg)

def tiny_config(**overrides):
  c = load_config("lmae", "synthetic")
  c.unlock()
  c.data.synthetic.num_train = 32
  c.data.synthetic.num_val = 16
  c.data.synthetic.image_size = (32, 32)
  c.data.crop_size = (40, 40)   # larger than the images: exercises the pad, then the resize to 32
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.model.image_size = (32, 32)
  c.model.patch_size = 8        # 16 patches; K = 8 at ratio 0.5
  c.model.enc_dim, c.model.dec_dim = 64, 32
  c.optim.lr = 2e-3
  c.optim.plateau_accumulation = 4
  c.train.steps = 4
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 2
  c.train.num_images = 2
  for k, v in overrides.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  c.lock()
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One tiny run (4 steps, checkpoints at 2 and 4)."""
  workdir = str(tmp_path_factory.mktemp("lmae_run"))
  result = train.run(tiny_config(), workdir)
  return workdir, result


# --- train step -------------------------------------------------------------------------------------------
def test_train_step_lowers_the_loss(tmp_path):
  config = tiny_config(**{"lmae.class_weighting": "none", "optim.schedule": "constant"})
  mesh = sharding.make_mesh(1)
  task = get_method("lmae").build(config, mesh, str(tmp_path))
  step = train.compile_step(task, mesh)
  state = sharding.replicate(task.state, mesh)
  losses, fracs = [], []
  for i in range(20):
    state, m = step(state, sharding.to_global(next(task.train_iter), mesh), jax.random.PRNGKey(i))
    losses.append(float(m["loss"]))
    fracs.append([float(m[f"frac_{s}"]) for s in P.STRATEGY_ORDER])
  assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
  np.testing.assert_allclose(np.sum(fracs, axis=1), 1.0, atol=1e-6)
  assert float(m["lr"]) == pytest.approx(2e-3)


def test_logged_strategies_are_the_ones_mixed_scores_used():
  b = jax.random.uniform(jax.random.PRNGKey(1), (64, 16))
  for seed in range(3):
    rng = jax.random.PRNGKey(seed)
    which = np.asarray(inf.strategy_choice(rng, 64, (1, 2, 2)))
    mixed = np.asarray(P.mixed_strategy_scores(rng, b, (1, 2, 2)))
    noise_key = jax.random.split(rng)[1]
    for i, name in enumerate(P.STRATEGY_ORDER):
      expect = np.asarray(P.MASK_STRATEGIES[name](noise_key, b))
      np.testing.assert_array_equal(mixed[which == i], expect[which == i])


def test_batch_is_at_model_size_and_normalized(tmp_path):
  task = get_method("lmae").build(tiny_config(), sharding.make_mesh(1), str(tmp_path))
  batch = next(task.train_iter)
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (8, 32, 32) and batch["label"].dtype == np.int32
  assert abs(float(batch["image"].mean())) < 2.0
  assert set(np.unique(batch["label"])) <= set(range(N)) | {255}


# --- regions and composition (model-free hand checks) ----------------------------------------------------
def test_masked_region_confusion_and_compose_by_hand():
  # 8x8 label, p=4: patches 0 (top-left, all background), 1 (half void), 2 (class 2), 3 (class 3).
  label = np.zeros((1, 8, 8), np.int32)
  label[0, :4, 4:6] = 255
  label[0, :4, 6:] = 1
  label[0, 4:, :4] = 2
  label[0, 4:, 4:] = 3
  _, ids_masked, mask = inf.strategy_mask(jnp.asarray(label), jax.random.PRNGKey(0), strategy="background_first",
                                          k=2, p=4, background_classes=(0,))
  assert ids_masked.tolist() == [[0, 1]]  # b = (1, 0.5, 0, 0): the two background-heaviest
  mask_px = np.asarray(inf.patch_pixels(mask, 4, 8, 8))
  expect = np.zeros((1, 8, 8), bool)
  expect[0, :4, :] = True
  np.testing.assert_array_equal(mask_px, expect)
  pred = np.full((1, 8, 8), 3, np.int32)  # a model that always says "class 3"
  conf_pa = np.asarray(metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 4, region=jnp.asarray(mask_px)))
  # Masked non-void pixels: 16 background + 8 class 1 (the 8 void pixels are excluded), all predicted 3.
  assert conf_pa.sum() == 24 and conf_pa[0, 3] == 16 and conf_pa[1, 3] == 8
  composed = np.asarray(inf.compose(jnp.asarray(label), jnp.asarray(pred), jnp.asarray(mask_px)))
  np.testing.assert_array_equal(composed[~mask_px], label[~mask_px])  # visible pixels kept
  assert (composed[mask_px] == 3).all()


def test_given_pixels_are_never_changed_by_completion_compose():
  rng = np.random.default_rng(0)
  label = rng.choice([0, 1, 2, 254, 255], size=(20, 24)).astype(np.uint8)
  pred = rng.integers(0, 3, (20, 24)).astype(np.uint8)
  given = inf.given_pixels(label, 3, (0,))
  np.testing.assert_array_equal(given, (label == 1) | (label == 2))
  out = inf.compose(label, pred, np.ones_like(given) & ~given)
  np.testing.assert_array_equal(out[given], label[given])
  np.testing.assert_array_equal(out[~given], pred[~given])


def test_nearest_maps_are_consistent():
  patch_of = inf.model_patch_of_pixels((5, 7), (8, 8), 4)
  assert patch_of.shape == (5, 7) and set(np.unique(patch_of)) == {0, 1, 2, 3}
  model_rows = inf.nearest_index(8, 5)
  np.testing.assert_array_equal(patch_of[:, 0], model_rows // 4 * 2)
  up = inf.resize_nearest(np.arange(64).reshape(8, 8), (5, 7))
  assert up.shape == (5, 7) and (np.arange(64).reshape(8, 8)[model_rows][:, inf.nearest_index(8, 7)] == up).all()


# --- class frequencies ------------------------------------------------------------------------------------
def test_class_frequencies_written_then_reused(tmp_path):
  config = tiny_config()
  get_method("lmae").build(config, sharding.make_mesh(1), str(tmp_path))
  saved = json.load(open(tmp_path / "class_frequencies.json"))
  src = SyntheticSource(32, (32, 32), N, seed=config.data.synthetic.seed, split="train")
  counts = np.bincount(np.concatenate([src[i]["label"].ravel() for i in range(32)]), minlength=N)
  assert saved["pixel_counts"] == counts.tolist()
  np.testing.assert_allclose(saved["frequencies"], counts / counts.sum())
  # A second build reads the file instead of recounting: changed frequencies change the weights.
  saved["frequencies"] = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
  json.dump(saved, open(tmp_path / "class_frequencies.json", "w"))
  task = get_method("lmae").build(config, sharding.make_mesh(1), str(tmp_path))
  w = np.asarray(task.state["extra"]["class_weights"])
  assert w[0] < w[1] and np.allclose(w[1:], w[1])


# --- the loop ----------------------------------------------------------------------------------------------
def test_train_resume_eval_and_metrics(tmp_path, trained):
  workdir, result = trained
  for prefix in ("val", "val_random"):
    # Global includes the visible (given) pixels, which are always right: strictly above the masked-only
    # accuracy unless the model is perfect.
    assert result[f"{prefix}/pixel_acc"] > result[f"{prefix}/pa_pixel_acc"]
    pa_ious = [v for k, v in result.items() if k.startswith(f"{prefix}/pa_iou/")]
    assert result[f"{prefix}/pa_miou"] == pytest.approx(np.mean(pa_ious), abs=1e-9)
    ious = [v for k, v in result.items() if k.startswith(f"{prefix}/iou/")]
    assert result[f"{prefix}/miou"] == pytest.approx(np.mean(ious), abs=1e-9)
  assert os.path.isfile(os.path.join(workdir, "config.json"))
  assert any(f.startswith("val_completions") for f in os.listdir(os.path.join(workdir, "images")))
  # Resume: a run stopped at step 2 and resumed equals the straight run's numbers.
  resumed = str(tmp_path / "resumed")
  train.run(tiny_config(**{"train.stop_at": 2}), resumed)
  again = train.run(tiny_config(), resumed)
  assert again["val/pa_miou"] == pytest.approx(result["val/pa_miou"], abs=1e-6)
  assert again["val_random/miou"] == pytest.approx(result["val_random/miou"], abs=1e-6)
  # Eval mode restores the checkpoint and, with the fixed eval masks, reproduces the numbers.
  evaluated = train.run(tiny_config(mode="eval"), workdir)
  for k in ("val/pa_miou", "val/miou", "val_random/pa_miou"):
    assert evaluated[k] == pytest.approx(result[k], abs=1e-6)


def test_visible_pixels_are_always_right_in_the_global_matrix(tmp_path):
  """conf(global) - conf(PA) counts the visible pixels, which the composition copies from the truth."""
  config = tiny_config()
  task = get_method("lmae").build(config, sharding.make_mesh(8), str(tmp_path))
  state = sharding.replicate(task.state, sharding.make_mesh(8))
  for evaluator, strategy in zip(task.evaluators, ("background_first", "random")):
    confs, picture = evaluator.confusions(state)
    conf_pa, conf_all = confs["model"]
    visible = conf_all - conf_pa
    assert (visible >= 0).all() and (visible == np.diag(np.diag(visible))).all()
    # Expected counts: masked / visible non-void pixels of the 16 val images under the same fixed masks.
    src = SyntheticSource(16, (32, 32), N, seed=config.data.synthetic.seed, split="val")
    labels = jnp.asarray(np.stack([src[i]["label"] for i in range(16)]).astype(np.int32))
    masked = 0
    for b in range(2):
      batch = labels[8 * b:8 * b + 8]
      _, _, mask = inf.strategy_mask(batch, jax.random.fold_in(jax.random.PRNGKey(0), b), strategy=strategy,
                                     k=8, p=8, background_classes=(0,))
      masked += int(jnp.sum(inf.patch_pixels(mask, 8, 32, 32) & (batch != 255)))
    assert conf_pa.sum() == masked
    assert conf_all.sum() == int(jnp.sum(labels != 255))
    assert picture.shape[1] > 4 * 32 and picture.dtype == np.uint8  # 4 columns


def test_sharded_step_matches_single_device(tmp_path):
  losses = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(n)
    task = get_method("lmae").build(tiny_config(), mesh, str(tmp_path / f"w{n}"))
    state = sharding.replicate(task.state, mesh)
    step = train.compile_step(task, mesh)
    out = []
    for i in range(2):
      state, m = step(state, sharding.to_global(next(task.train_iter), mesh), jax.random.PRNGKey(i))
      out.append(float(m["loss"]))
    losses[n] = out
  np.testing.assert_allclose(losses[1], losses[8], rtol=2e-4)


# --- configs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,arg,ratio", [("lmae_voc", "0.6", 0.6), ("lmae", "cityscapes", 0.5),
                                            ("lmae", "camvid,cpu,0.75", 0.75), ("lmae", "camvid", 0.5),
                                            ("lmae", "synthetic", 0.5), ("lmae", None, 0.5)])
def test_configs_are_locked_lmae_configs(name, arg, ratio):
  c = load_config(name, arg)
  assert c.method == "lmae" and c.lmae.mask_ratio == ratio and c.train.best_metric == "val/pa_miou"
  assert c.optim.head_lr_mult == 1.0 and c.optim.schedule == "plateau" and c.optim.name == "adam"
  assert tuple(c.data.eval_size) == tuple(c.model.image_size)
  h, w = c.model.image_size
  assert h % c.model.patch_size == 0 and w % c.model.patch_size == 0
  with pytest.raises(AttributeError):
    c.lmae.mask_ration = 0.1


def test_flagship_config_without_voc_is_a_clear_error(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "maskseg_jax.main", f"--config={REPO}/configs/lmae_voc.py",
                      f"--workdir={tmp_path / 'w'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "data/VOC2012" in r.stderr and "JPEGImages" in r.stderr and "data.root" in r.stderr
  assert "Traceback" not in r.stderr


def test_degrade_label_removes_half_of_the_foreground_tiles():
  label = np.zeros((32, 48), np.uint8)
  label[:, 16:] = 3          # 4 foreground tiles of 16x16 in columns 1-2, rows 0-1
  label[0, 0] = 255          # void alone does not make a tile foreground-bearing
  out = inf.degrade_label(label, np.random.default_rng(0), patch=16, fraction=0.5)
  tiles = [(out[y:y + 16, x:x + 16] == 3).all() for y in (0, 16) for x in (16, 32)]
  assert sum(tiles) == 2 and out[0, 0] == 255
  assert set(np.unique(out[:, 16:])) == {0, 3} and ((out == 3) <= (label == 3)).all()


def test_train_transform_rescale_and_colour_jitter_are_opt_in():
  """Defaults (scale_range (1, 1), no jitter) draw exactly what crop + resize + flip draw (older runs
  reproduce); a rescale below the crop pads the label with ignore; the jitter changes the image, not the label."""
  from maskseg_jax.data import transforms as T
  from maskseg_jax.methods.lmae.task import LMAETrainTransform
  c = config_base.load_config("lmae", "synthetic")
  ex = SyntheticSource(1, (40, 48), 6, seed=0, split="train")[0]
  plain = LMAETrainTransform(c.data, (32, 32))(ex, np.random.default_rng(3))
  rng = np.random.default_rng(3)
  image, label = T.random_crop_pad(ex["image"], ex["label"], rng, c.data.crop_size, ignore_label=255)
  image, label = T.random_hflip(*T.resize(image, label, (32, 32)), rng)
  np.testing.assert_array_equal(plain["label"], label)
  np.testing.assert_allclose(plain["image"], T.normalize(image, c.data.mean, c.data.std))
  c.unlock()
  c.data.crop_size, c.data.scale_range = (40, 48), (0.5, 0.5)
  small = LMAETrainTransform(c.data, (32, 32))(ex, np.random.default_rng(3))
  assert (small["label"] == 255).mean() == pytest.approx(0.75, abs=0.05)  # a quarter of the crop is image
  c.data.scale_range = (1.0, 1.0)
  jit = LMAETrainTransform(c.data, (32, 32), color_jitter=0.4)(ex, np.random.default_rng(3))
  ref = LMAETrainTransform(c.data, (32, 32))(ex, np.random.default_rng(3))
  np.testing.assert_array_equal(jit["label"], ref["label"])
  assert np.abs(jit["image"] - ref["image"]).mean() > 0.05
