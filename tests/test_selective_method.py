"""Selective-masking pretraining end to end on tiny synthetic data: partitions, the reconstruction step and
pipeline, scored masks, stage chaining, exact resume inside a stage, fine-tuning weight transfer, sharding."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest

from maskseg_jax import checkpointing, pretrained, sharding, train
from maskseg_jax import config_base
from maskseg_jax.data import sources
from maskseg_jax.errors import CheckpointError, ConfigError, DataError
from maskseg_jax.methods import segmentation
from maskseg_jax.methods.selective_masking import scoring as selective_scoring
from maskseg_jax.methods.selective_masking import stages as selective_stages
from maskseg_jax.methods.selective_masking import task as sm
from maskseg_jax.methods.selective_masking import tiles
from maskseg_jax.methods.selective_masking.data import (ReconstructionTransform, canonical_batches, canonical_view,
                                                partition_indices, stage_plan, tile_grid, train_val_split)

REPO = os.path.join(os.path.dirname(__file__), "..")


def load_config(name, arg=None, **overrides):
  return config_base.load_config(name, arg, overrides)

TINY = {"data.synthetic.num_train": 24, "data.synthetic.num_val": 8, "data.synthetic.image_size": (32, 32),
        "data.crop_size": (32, 32), "data.eval_size": (32, 32), "data.batch_size": 8, "data.eval_batch_size": 8,
        "model.backbone": "resnet34", "model.width": 0.125, "train.log_every": 1, "train.eval_every": 0,
        "train.checkpoint_every": 100, "train.num_images": 2, "optim.warmup_steps": 0}
TINY_SELECTIVE = {"selective.num_partitions": 2, "selective.steps_per_stage": 3, "selective.grid": 4,
                  "selective.score_batch_size": 8, "selective.ms_ssim_weights": (0.5, 0.5),
                  "selective.ms_ssim_window": 3}


def tiny_pretrain(**overrides):
  return load_config("selective", "synthetic", **{**TINY, **TINY_SELECTIVE, **overrides})


def _ckpt_params(directory):
  params, stats, _ = pretrained.read_weights(directory)
  return pretrained.flatten(params), pretrained.flatten(stats)


def _assert_same(a: dict, b: dict, rtol=0.0, atol=0.0):
  """Equal {variable path: array} dicts (same paths, equal values)."""
  assert sorted(a) == sorted(b) and a
  for name in a:
    np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=rtol, atol=atol, err_msg=name)


# ------------------------------------------------------------------------------------------ partitions

def test_partitions_are_disjoint_cover_the_set_and_split_by_a_fixed_rule():
  parts = partition_indices(103, 10)
  allidx = np.concatenate(parts)
  assert len(allidx) == 103 and set(allidx.tolist()) == set(range(103))
  np.testing.assert_array_equal(parts[3], np.arange(3, 103, 10))
  train_idx, val_idx = train_val_split(parts[3], 10)
  np.testing.assert_array_equal(val_idx, [parts[3][9]])  # every 10th image of the partition validates
  assert set(train_idx) | set(val_idx) == set(parts[3]) and not set(train_idx) & set(val_idx)
  assert len(train_val_split(np.arange(5), 10)[1]) == 1  # small partitions still get one val image

  sel = tiny_pretrain(**{"selective.num_partitions": 10, "selective.steps_per_stage": 7}).selective
  plan = stage_plan(103, sel)
  assert [s.selective for s in plan] == [False] + [True] * 9 and all(s.steps == 7 for s in plan)
  seen = np.concatenate([s.images for s in plan])
  assert sorted(seen.tolist()) == list(range(103))
  random_plan = stage_plan(103, tiny_pretrain(**{"selective.strategy": "random", "selective.num_partitions": 10,
                                                 "selective.steps_per_stage": 7}).selective)
  assert len(random_plan) == 1 and random_plan[0].steps == 70 and not random_plan[0].selective
  assert len(random_plan[0].images) == 103  # the baseline: the same budget on the whole set
  stages = stage_plan(103, tiny_pretrain(**{"selective.strategy": "random_stages",
                                            "selective.num_partitions": 10}).selective)
  assert len(stages) == 10 and not any(s.selective for s in stages)
  with pytest.raises(DataError, match="cannot fill 10 partitions"):
    stage_plan(15, sel)
  with pytest.raises(ConfigError, match="'greedy' is not an accepted value"):
    load_config("selective", "synthetic,greedy")
  with pytest.raises(ConfigError, match="selective.strategy='greedy'"):
    stage_plan(24, tiny_pretrain(**{"selective.strategy": "greedy"}).selective)


def test_stage_configs_chain_weights_and_map_the_global_stop_step(tmp_path):
  config = tiny_pretrain(**{"train.stop_at": 4})
  plan = stage_plan(24, config.selective)
  c0, c1 = (selective_stages.stage_config(config, s, plan, str(tmp_path)) for s in plan)
  assert (c0.selective.stage, c1.selective.stage) == (0, 1)
  assert c0.train.steps == c1.train.steps == 3 and c1.seed == config.seed + 1
  assert c0.train.stop_at == -1 and c1.train.stop_at == 1  # global step 4 = stage 1's first step
  assert c0.model.init_from == "" and c1.model.init_from == str(tmp_path / "stage_0")
  with pytest.raises(ConfigError, match="selective.steps_per_stage=3"):
    selective_stages.run(tiny_pretrain(**{"train.steps": 10}), str(tmp_path / "w"), train.run)


# ------------------------------------------------------------------------------------------ data and step

def test_transform_moves_the_mask_with_the_image():
  """An image white exactly on its masked tiles: after the random resized crop and flip, the mask must still
  cover the white pixels of the target; the input is the target up to colour jitter (equal without it)."""
  config = tiny_pretrain(**{"data.crop_size": (32, 32)})
  grid = tile_grid(config.data, config.selective)
  tile_mask = np.zeros(grid.num_tiles, bool)
  tile_mask[[0, 5, 6, 11, 12, 13, 14, 15]] = True
  pixel = tile_mask[grid.tile_ids()]
  image = np.repeat(np.where(pixel[..., None], 255, 0), 3, axis=-1).astype(np.uint8)
  transform = ReconstructionTransform(config.data, config.selective, grid, {"img": tile_mask})
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  changed = 0
  for seed in range(12):
    out = transform({"image": image, "label": np.zeros((32, 32), np.uint8), "id": "img"},
                    np.random.default_rng(seed))
    assert out["image"].shape == out["target"].shape == (32, 32, 3) and out["mask"].dtype == np.bool_
    target = out["target"] * std + mean
    white, black = target.mean(-1) > 200, target.mean(-1) < 55
    assert white.any() or black.any()
    assert out["mask"][white].all() and not out["mask"][black].any()
    if white.any() and black.any():  # jitter of a grey image keeps white brighter than black
      assert out["image"][white].mean() > out["image"][black].mean()
    changed += int(not np.array_equal(out["mask"], pixel))
  assert changed > 6  # crops and flips do move the mask
  with pytest.raises(DataError, match="has no tile mask"):
    transform({"image": image, "label": None, "id": "other"}, np.random.default_rng(0))
  # Random masking: a fresh mask per draw with exactly half of the tiles on the canonical grid.
  fixed = tiny_pretrain(**{"selective.crop_scale": (1.0, 1.0), "selective.jitter_p": 0.0, "data.hflip": False})
  plain = ReconstructionTransform(fixed.data, fixed.selective, grid)
  masks = [plain({"image": image, "label": None, "id": "x"}, np.random.default_rng(s))["mask"] for s in range(4)]
  counts = [np.unique(grid.tile_ids()[m]).size for m in masks]
  assert counts == [8] * 4 and not all(np.array_equal(masks[0], m) for m in masks[1:])
  out = plain({"image": image, "label": None, "id": "x"}, np.random.default_rng(0))
  np.testing.assert_allclose(out["target"], (canonical_view(image, (32, 32)) - mean) / std, atol=1e-5)
  np.testing.assert_array_equal(out["image"], out["target"])


def test_reconstruction_step_lowers_the_loss(tmp_path):
  config = tiny_pretrain(**{"selective.steps_per_stage": 100})  # the lr schedule spans the stage
  plan = stage_plan(24, config.selective)
  cfg = selective_stages.stage_config(config, plan[0], plan, str(tmp_path))
  mesh = sharding.make_mesh()
  task = sm.build(cfg, mesh, str(tmp_path / "stage_0"))
  step = train.compile_step(task, mesh)
  state = sharding.replicate(task.state, mesh)
  local = next(task.train_iter)
  assert local["mask"].shape == (8, 32, 32) and local["target"].shape == (8, 32, 32, 3)
  batch = sharding.to_global(local, mesh)
  losses = []
  for i in range(12):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    losses.append(float(metrics["loss"]))
    assert set(metrics) >= {"loss", "l1", "ms_ssim", "lr"}
  # Window means, not single steps: one step's loss moves by a few percent with its masks (1.03 -> 0.98 / 0.85 / 0.81).
  first, middle, last = (np.mean(losses[i:i + 4]) for i in (0, 4, 8))
  assert np.isfinite(losses).all() and last < middle < first and last < 0.87 * first, losses


AUTHORS_FLAGS = {"selective.metric_space": "normalized", "selective.score_window": "gaussian",
                 "selective.score_scope": "tile", "selective.loss_ssim": "ssim3"}


def test_authors_scoring_and_loss_flags_reach_the_steps(tmp_path):
  """The flags that reproduce the authors' code (experiments/parity_selective.py) drive the real scorer and step."""
  config, default = tiny_pretrain(**AUTHORS_FLAGS), tiny_pretrain()
  grid = tile_grid(config.data, config.selective)
  mdef, params, stats = sm.init_model(config)
  model_state = {"params": params, "batch_stats": stats}
  mesh1 = sharding.make_mesh(1)
  source = sources.subset(sm.pretrain_source(config), np.arange(8))
  rng = jax.random.PRNGKey(3)
  score = lambda c: selective_scoring.score_source(
      selective_scoring.make_score_step(mdef, grid, c.selective, c.data, mesh1), model_state, source, c.data, grid,
      batch_size=8, mesh=mesh1, rng=rng)[1:]
  (masks, scores), (_, default_scores) = score(config), score(default)
  images = next(iter(canonical_batches(source, config.data, (grid.height, grid.width), 8)))["image"]
  direct = tiles.make_selective_scorer(selective_scoring.eval_apply(mdef), grid, num_draws=5, ratio=0.5,
                                       fill_color=0.0, ssim_window="gaussian", ssim_scope="tile")
  want_masks, want = direct(model_state, jax.numpy.asarray(images), jax.random.fold_in(rng, 0))
  np.testing.assert_allclose(scores, np.asarray(want), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(masks, np.asarray(want_masks))
  assert np.abs(scores - default_scores).max() > 1e-2
  plan = stage_plan(24, config.selective)
  cfg = selective_stages.stage_config(config, plan[0], plan, str(tmp_path))
  task = sm.build(cfg, mesh1, str(tmp_path / "stage_0"))
  state, metrics = train.compile_step(task, mesh1)(sharding.replicate(task.state, mesh1),
                                                   sharding.to_global(next(task.train_iter), mesh1),
                                                   jax.random.PRNGKey(0))
  assert set(metrics) >= {"loss", "l1", "ssim3"} and "ms_ssim" not in metrics
  assert float(metrics["loss"]) == pytest.approx(float(metrics["l1"]) + 1.0 - float(metrics["ssim3"]), rel=1e-5)
  with pytest.raises(ConfigError, match="selective.metric_space='rgb'; expected one of"):
    selective_scoring.make_score_step(mdef, grid, tiny_pretrain(**{"selective.metric_space": "rgb"}).selective,
                                      config.data, mesh1)


# ------------------------------------------------------------------------------------------ stage runs

@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An uninterrupted two-stage pretraining run (stage 0 random masks, stage 1 selective)."""
  workdir = str(tmp_path_factory.mktemp("selective") / "straight")
  result = train.run(tiny_pretrain(), workdir)
  return workdir, result


def test_stored_masks_are_the_scorers_top_half_and_round_trip(straight):
  workdir, result = straight
  assert {"val/loss", "val_random/loss", "val/l1_masked"} <= set(result)
  config = tiny_pretrain()
  grid = tile_grid(config.data, config.selective)
  stage1 = os.path.join(workdir, "stage_1")
  masks, g = tiles.load_tile_masks(os.path.join(stage1, sm.MASKS_FILE), expected_grid=grid)
  source = sm.pretrain_source(config)
  plan = stage_plan(len(source), config.selective)
  ids = [source.id_of(int(i)) for i in plan[1].images]
  assert sorted(masks) == sorted(ids)
  assert all(m.sum() == grid.num_tiles // 2 for m in masks.values())  # exactly 50% of the tiles
  scores = selective_scoring.load_scores(os.path.join(stage1, sm.SCORES_FILE))
  for i in ids:  # the masked tiles are exactly the highest mean scores
    assert scores[i][masks[i]].min() >= scores[i][~masks[i]].max()
  # Recomputed independently on one device from stage 0's final weights: the same masks and scores.
  cfg1 = selective_stages.stage_config(config, plan[1], plan, workdir)
  mdef, params, stats = sm.init_model(cfg1)
  mesh1 = sharding.make_mesh(1)
  step = selective_scoring.make_score_step(mdef, grid, config.selective, config.data, mesh1)
  rng = jax.random.fold_in(jax.random.PRNGKey(cfg1.seed), selective_stages.SCORE_STREAM)
  again_ids, again, again_scores = selective_scoring.score_source(
      step, {"params": params, "batch_stats": stats}, sources.subset(source, plan[1].images), config.data, grid,
      batch_size=8, mesh=mesh1, rng=rng)
  assert again_ids == ids
  for i, m, s in zip(again_ids, again, again_scores):
    np.testing.assert_array_equal(m, masks[i])
    np.testing.assert_allclose(s, scores[i], rtol=1e-5, atol=1e-6)
  # The stage trains on the stored masks: the transform of stage 1 holds exactly them.
  task = sm.build(cfg1, mesh1, stage1)
  assert task.train_iter is not None
  loaded = sm.load_stage_masks(stage1, grid, ids)
  for i in ids:
    np.testing.assert_array_equal(loaded[i], masks[i])
  images = os.listdir(os.path.join(stage1, "images"))
  assert any(f.startswith("scoring_reconstruction") for f in images)
  assert any(f.startswith("val_reconstruction") for f in images)


def test_stage_1_starts_from_stage_0_final_weights(straight):
  workdir, _ = straight
  config = tiny_pretrain()
  plan = stage_plan(24, config.selective)
  for k in (0, 1):
    done = json.load(open(os.path.join(workdir, f"stage_{k}", "done")))
    assert done["step"] == 3
  cfg1 = selective_stages.stage_config(config, plan[1], plan, workdir)
  task = sm.build(cfg1, sharding.make_mesh(), os.path.join(workdir, "stage_1"))
  params0, stats0 = _ckpt_params(os.path.join(workdir, "stage_0"))
  _assert_same(pretrained.flatten(task.state["params"]), params0)
  _assert_same(pretrained.flatten(task.state["batch_stats"]), stats0)
  assert int(task.state["step"]) == 0  # a fresh optimizer and step count per stage
  params1, _ = _ckpt_params(os.path.join(workdir, "stage_1"))
  assert not np.allclose(params1["head/kernel"], params0["head/kernel"])  # and stage 1 trained on from there


def test_run_interrupted_inside_stage_1_resumes_there_and_matches(straight, tmp_path):
  workdir, _ = straight
  resumed = str(tmp_path / "resumed")
  train.run(tiny_pretrain(**{"train.stop_at": 4}), resumed)  # global step 4 = stage 1, step 1
  assert os.path.isfile(os.path.join(resumed, "stage_0", "done"))
  assert not os.path.isfile(os.path.join(resumed, "stage_1", "done"))
  ck = checkpointing.Checkpointer(os.path.join(resumed, "stage_1", "checkpoints"))
  assert ck.latest_step() == 1
  ck.close()
  masks_before = os.path.getmtime(os.path.join(resumed, "stage_1", sm.MASKS_FILE))
  stage0_before = os.path.getmtime(os.path.join(resumed, "stage_0", "done"))
  train.run(tiny_pretrain(), resumed)
  assert os.path.getmtime(os.path.join(resumed, "stage_1", sm.MASKS_FILE)) == masks_before  # not rescored
  assert os.path.getmtime(os.path.join(resumed, "stage_0", "done")) == stage0_before  # stage 0 skipped
  rows = [json.loads(r) for r in open(os.path.join(resumed, "stage_1", "metrics.jsonl"))]
  assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
  for a, b in zip(_ckpt_params(os.path.join(workdir, "stage_1")), _ckpt_params(os.path.join(resumed, "stage_1"))):
    _assert_same(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ fine-tuning

def _finetune_config(init_from, **overrides):
  return load_config("selective", "synthetic,finetune",
                     **{**TINY, "model.init_from": init_from, "train.steps": 2, **overrides})


def test_finetuning_loads_everything_but_the_head(straight):
  workdir, _ = straight
  config = _finetune_config(workdir)
  _, _, state = segmentation.init_model_state(config, config.data.num_classes)
  final_params, final_stats = _ckpt_params(os.path.join(workdir, "stage_1"))  # the last finished stage
  params = pretrained.flatten(state["params"])
  _assert_same({k: v for k, v in params.items() if not k.startswith("head/")},
               {k: v for k, v in final_params.items() if not k.startswith("head/")})
  _assert_same(pretrained.flatten(state["batch_stats"]), final_stats)
  assert final_params["head/kernel"].shape[-1] == 3
  assert params["head/kernel"].shape[-1] == config.data.num_classes == 6  # the head is replaced
  scratch = pretrained.flatten(segmentation.init_model_state(_finetune_config(""), 6)[2]["params"])
  np.testing.assert_array_equal(params["head/kernel"], scratch["head/kernel"])  # fresh, from the same seed
  assert not np.allclose(params["backbone/layer1/0/conv1/kernel"], scratch["backbone/layer1/0/conv1/kernel"])


def test_checkpoint_errors_name_the_path(straight, tmp_path):
  workdir, _ = straight
  missing = str(tmp_path / "nowhere")
  with pytest.raises(CheckpointError, match="nowhere does not exist"):
    segmentation.init_model_state(_finetune_config(missing), 6)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(CheckpointError, match=f"no checkpoint at {re.escape(str(empty))}"):
    segmentation.init_model_state(_finetune_config(str(empty)), 6)
  with pytest.raises(CheckpointError, match=r"stage_1.*holds 'backbone/.*' with shape .*expects"):
    segmentation.init_model_state(_finetune_config(workdir, **{"model.width": 0.25}), 6)
  with pytest.raises(CheckpointError, match="has no variable 'aspp/"):
    segmentation.init_model_state(_finetune_config(workdir, **{"model.name": "deeplabv3plus"}), 6)
  unfinished = tmp_path / "unfinished"
  (unfinished / "stage_0").mkdir(parents=True)
  with pytest.raises(CheckpointError, match="no finished stage"):
    pretrained.resolve_checkpoint_dir(str(unfinished))


# ------------------------------------------------------------------------------------------ sharding

def test_scoring_on_8_devices_equals_1_device():
  config = tiny_pretrain()
  grid = tile_grid(config.data, config.selective)
  source = sources.subset(sm.pretrain_source(config), range(12))
  mdef, params, stats = sm.init_model(config)
  out = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(n)
    step = selective_scoring.make_score_step(mdef, grid, config.selective, config.data, mesh)
    out[n] = selective_scoring.score_source(step, {"params": params, "batch_stats": stats}, source, config.data,
                                            grid, batch_size=8, mesh=mesh, rng=jax.random.PRNGKey(3))
  assert out[1][0] == out[8][0] and len(out[1][0]) == 12  # 12 images: one full and one padded batch
  np.testing.assert_array_equal(out[1][1], out[8][1])
  np.testing.assert_allclose(out[1][2], out[8][2], rtol=1e-5, atol=1e-6)
  assert (out[8][1].sum(1) == 8).all()
  with pytest.raises(ConfigError, match="score_batch_size=12 must be divisible by the 8 devices"):
    selective_scoring.score_source(step, {"params": params, "batch_stats": stats}, source, config.data, grid,
                                   batch_size=12, mesh=mesh, rng=jax.random.PRNGKey(3))


# ------------------------------------------------------------------------------------------ configs, experiment

@pytest.mark.parametrize("arg", ["voc", "cityscapes,random", "camvid", "camvid,cpu,random_stages", "folder",
                                 "synthetic"])
def test_pretraining_configs(arg):
  c = load_config("selective", arg)
  assert c.method == "selective_masking" and c.model.name == "unet" and c.train.steps == 0
  grid = tile_grid(c.data, c.selective)
  assert grid.num_tiles == c.selective.grid ** 2 and c.data.batch_size % 8 == 0
  assert c.selective.strategy == ({"cityscapes,random": "random", "camvid,cpu,random_stages": "random_stages"}
                                  .get(arg, "selective"))
  if arg.startswith("camvid,cpu"):
    assert c.data.image_scale == 0.25 and c.data.crop_size == (64, 64) and c.selective.grid == 8
    assert c.model.width == 0.25


@pytest.mark.parametrize("name", ["voc", "cityscapes", "camvid", "folder", "synthetic"])
def test_finetune_configs(name):
  c = load_config("selective", f"{name},finetune")
  pre = load_config("selective", name)
  assert c.method == "supervised" and c.model.name == "unet" and c.model.init_from == ""
  assert (c.model.width, c.model.backbone) == (pre.model.width, pre.model.backbone)
  assert c.data.num_classes == pre.data.num_classes and c.optim.name == "adam"


def test_camvid_experiment_smoke(tmp_path):
  spec = importlib.util.spec_from_file_location("exp", os.path.join(REPO, "experiments", "selective_camvid.py"))
  exp = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(exp)
  report = exp.main(["--workdir", str(tmp_path), "--tiny", "--partitions=2", "--steps_per_stage=1",
                     "--finetune_steps=1", f"--xla_cache={jax.config.jax_compilation_cache_dir or ''}"])
  from maskseg_jax.data.file_layouts import CAMVID_CLASSES
  assert set(report["finetune"]) == {"selective", "random", "none"} and report["pretrain_steps"] == 2
  for row in report["finetune"].values():
    assert 0.0 <= row["miou"] <= 1.0 and set(row["iou"]) == set(CAMVID_CLASSES) and len(row["miou_seeds"]) == 1
  saved = json.load(open(tmp_path / "results.json"))
  lines = saved["markdown"].splitlines()
  assert lines[0].startswith("| init | mIoU | ± (half range) | mIoU per seed | pixel acc | sky |")
  assert len(lines) == 2 + 3 + 2 and lines[-1].startswith("| random - none |")
  assert all(line.count("|") == 5 + len(CAMVID_CLASSES) + 1 for line in lines)
  assert os.path.isfile(tmp_path / "pretrain_selective" / "stage_1" / "masks.npz")
  assert not os.path.isdir(tmp_path / "pretrain_random" / "stage_1")  # the baseline: one stage, same budget
  assert os.path.isdir(tmp_path / "finetune_none_seed0" / "checkpoints")
