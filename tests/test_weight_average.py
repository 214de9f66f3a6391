"""The weight average (`train.ema_decay`): its update rule, exact resume, and that evaluation, completion and
`model.init_from` read the average, not the last step's weights."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fixtures
from maskseg_jax import checkpointing, pretrained, sharding, train, weight_average
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods import get_method
from maskseg_jax.metric_writer import MetricWriter

TINY = {"data.synthetic.num_train": 16, "data.synthetic.num_val": 8, "data.synthetic.image_size": (32, 32),
        "data.crop_size": (32, 32), "data.eval_size": (32, 32), "data.batch_size": 8,
        "data.eval_batch_size": 8, "model.width": 0.125, "train.steps": 4, "train.log_every": 2,
        "train.eval_every": 4, "train.checkpoint_every": 2, "train.ema_decay": 0.9}


def test_the_decay_warms_up_then_holds():
  steps = jnp.arange(20000)
  d = np.asarray(weight_average.step_decay(steps, 0.999))
  assert d[0] == pytest.approx(0.1) and d[1] == pytest.approx(2 / 11)
  assert np.all(np.diff(d) >= 0) and d[-1] == pytest.approx(0.999)


def test_the_average_follows_the_closed_form_and_the_task_never_sees_it():
  seen = []

  def step_fn(state, batch, rng):  # params += 1 per step
    seen.append(sorted(state))
    return {**state, "step": state["step"] + 1, "params": {"w": state["params"]["w"] + 1.0}}, {"loss": 0.0}

  state = weight_average.attach({"step": jnp.int32(0), "params": {"w": jnp.zeros(3)}}, 0.5)
  fn = weight_average.averaging(step_fn, 0.5)
  ema = 0.0
  for t in range(6):
    state, _ = fn(state, None, None)
    d = min(0.5, (1 + t) / (10 + t))
    ema = d * ema + (1 - d) * (t + 1)
  np.testing.assert_allclose(state["ema"]["w"], ema, rtol=1e-6)
  assert all("ema" not in keys for keys in seen)
  view = weight_average.for_inference(state)
  assert "ema" not in view and float(view["params"]["w"][0]) == pytest.approx(ema)
  assert weight_average.for_inference({"params": 1}) == {"params": 1}


def test_off_leaves_the_state_and_step_alone():
  state = {"params": {"w": jnp.ones(2)}}
  assert weight_average.attach(state, 0.0) is state
  step_fn = lambda s, b, r: (s, {})
  assert weight_average.averaging(step_fn, 0.0) is step_fn


def test_a_decay_of_one_is_refused_by_name(tmp_path):
  with pytest.raises(ConfigError, match=r"train.ema_decay=1; expected 0 \(off\) or a decay in \(0, 1\)"):
    train.run(fixtures.load_config("configs/supervised.py", **{**TINY, "train.ema_decay": 1.0}), str(tmp_path))


def _state(workdir):
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  state = ck.read_state()
  ck.close()
  return state


def test_resume_continues_the_average_and_eval_and_init_from_use_it(tmp_path):
  config = lambda **o: fixtures.load_config("configs/supervised.py", **{**TINY, **o})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  final = train.run(config(), straight)
  train.run(config(**{"train.stop_at": 2}), resumed)
  train.run(config(), resumed)
  a, b = _state(straight), _state(resumed)
  for x, y in zip(jax.tree.leaves(a["ema"]), jax.tree.leaves(b["ema"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  gap = max(float(np.max(np.abs(np.asarray(e) - np.asarray(p))))
            for e, p in zip(jax.tree.leaves(a["ema"]), jax.tree.leaves(a["params"])))
  assert gap > 1e-4  # the average is not the last step's weights
  params, _, _ = pretrained.read_weights(straight)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(a["ema"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  again = train.run(config(mode="eval"), straight)  # the restored average scores as the training run's eval
  assert again["val/miou"] == pytest.approx(final["val/miou"], abs=1e-6)


def test_evaluation_scores_the_average(tmp_path):
  config = fixtures.load_config("configs/supervised.py", **TINY)
  mesh = sharding.make_mesh(1)
  task = get_method("supervised").build(config, mesh, str(tmp_path))
  state = sharding.replicate(task.state, mesh)
  zeros = jax.tree.map(jnp.zeros_like, state["params"])
  writer = MetricWriter(str(tmp_path / "logs"), total_steps=1)
  try:
    score = lambda s: train.evaluate(task, s, writer, 0, write_images=False)["val/pixel_acc"]
    plain, averaged, zeroed = score(state), score({**state, "ema": zeros}), score({**state, "params": zeros})
  finally:
    writer.close()
  assert averaged == pytest.approx(zeroed) and abs(averaged - plain) > 1e-3


def test_the_completion_command_loads_the_average(tmp_path, monkeypatch):
  from maskseg_jax.methods.lmae import runs
  workdir = str(tmp_path / "lmae")
  train.run(fixtures.tiny_lmae_config(**{"train.ema_decay": 0.9}), workdir)
  captured = {}
  real = runs.make_completer
  monkeypatch.setattr(runs, "make_completer",
                      lambda config, mdef, params, *a, **k: captured.setdefault("p", params) and real(
                          config, mdef, params, *a, **k))
  runs.load_completer(workdir, log=lambda s: None)
  saved = _state(workdir)
  for x, y in zip(jax.tree.leaves(captured["p"]), jax.tree.leaves(saved["ema"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
