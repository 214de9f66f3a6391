"""The training loop end to end on the synthetic default: sharded == single-device, exact resume,
checkpoints, logs, eval and predict modes."""

import json
import os

import jax
import fixtures
import numpy as np
import pytest

from maskseg_jax import checkpointing, sharding, train
from maskseg_jax.methods import get_method

TINY = {"data.synthetic.num_train": 32, "data.synthetic.num_val": 16, "data.synthetic.image_size": (32, 32),
        "data.crop_size": (32, 32), "data.eval_size": (32, 32), "data.batch_size": 8,
        "data.eval_batch_size": 8, "model.width": 0.125, "train.steps": 4, "train.log_every": 2,
        "train.eval_every": 4, "train.checkpoint_every": 2}


def tiny_config(**overrides):
  return fixtures.load_config("configs/supervised.py", **{**TINY, **overrides})


def _params(workdir):
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ck.latest_step()
  params = ck.read_state()["params"]
  ck.close()
  return step, params


def test_sharded_step_matches_single_device(tmp_path):
  config = tiny_config()
  losses = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(n)
    task = get_method("supervised").build(config, mesh, str(tmp_path / f"w{n}"))
    state = sharding.replicate(task.state, mesh)
    step = train.compile_step(task, mesh)
    batch = sharding.to_global(next(task.train_iter), mesh)
    state, m = step(state, batch, jax.random.PRNGKey(0))
    state, m2 = step(state, sharding.to_global(next(task.train_iter), mesh), jax.random.PRNGKey(1))
    losses[n] = (float(m["loss"]), float(m2["loss"]))
  np.testing.assert_allclose(losses[1], losses[8], rtol=2e-4)


def test_restart_equals_straight_run_and_writes_logs(tmp_path):
  straight = str(tmp_path / "straight")
  train.run(tiny_config(), straight)
  resumed = str(tmp_path / "resumed")
  train.run(tiny_config(**{"train.stop_at": 2}), resumed)  # stops with a checkpoint, like a preemption
  result = train.run(tiny_config(), resumed)
  s1, p1 = _params(straight)
  s2, p2 = _params(resumed)
  assert s1 == s2 == 4
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert "val/miou" in result and 0.0 <= result["val/miou"] <= 1.0
  rows = [json.loads(l) for l in open(os.path.join(straight, "metrics.jsonl"))]
  assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]
  assert any("val/iou/" in k for r in rows for k in r)
  assert os.listdir(os.path.join(straight, "tensorboard"))
  assert any(f.endswith(".png") for f in os.listdir(os.path.join(straight, "images")))


def test_eval_and_predict_modes_use_the_checkpoint(tmp_path):
  workdir = str(tmp_path / "w")
  final = train.run(tiny_config(), workdir)
  again = train.run(tiny_config(mode="eval"), workdir)
  assert again["val/miou"] == pytest.approx(final["val/miou"], abs=1e-6)
  assert json.load(open(os.path.join(workdir, "eval.json")))["val/miou"] == pytest.approx(final["val/miou"])
  train.run(tiny_config(mode="predict"), workdir)
  preds = os.listdir(os.path.join(workdir, "predictions"))
  assert len(preds) == 16 and all(p.endswith(".png") for p in preds)


def test_unknown_mode_is_a_clear_error(tmp_path):
  from maskseg_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="config.mode='dance'"):
    train.run(tiny_config(mode="dance"), str(tmp_path / "w"))


def test_warmup_step_runs_before_warmup_steps_also_after_a_resume(tmp_path):
  """The loop runs a task's `warmup_step` while the state's step < `warmup_steps` (semi: labeled-only steps)."""
  config = tiny_config(**{"train.log_every": 1, "train.eval_every": 0})
  workdir = str(tmp_path / "w")

  def task_with_warmup(cfg):
    task = get_method("supervised").build(cfg, sharding.make_mesh(), workdir)

    def marked(state, batch, rng):  # the real step, its logged loss replaced by a marker
      new_state, metrics = task.train_step(state, batch, rng)
      return new_state, {**metrics, "loss": metrics["loss"] * 0 + 123.0}
    task.warmup_step, task.warmup_steps = marked, 3
    return task

  train.run(tiny_config(**{"train.log_every": 1, "train.eval_every": 0, "train.stop_at": 2}), workdir,
            task=task_with_warmup(config))
  train.run(config, workdir, task=task_with_warmup(config))
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if '"train"' in l]
  assert [(r["step"], r["loss"] == 123.0) for r in rows] == [(1, True), (2, True), (3, True), (4, False)]
