"""Optimizer wiring (head lr multiplier, schedules, plateau), sliding-window eval, checkpoint preservation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskseg_jax import checkpointing, config_base, optim
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods import segmentation_eval as evaluate


def _optim_config(**kw):
  oc = config_base.base_config().optim
  oc.update(kw)
  return oc


def test_head_params_get_head_lr_mult():
  params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}
  assert optim.param_labels(params) == {"backbone": {"w": "backbone"}, "head": {"w": "head"}}
  oc = _optim_config(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, head_lr_mult=10.0, schedule="constant")
  tx = optim.make_optimizer(oc, 10, params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(1.0))
  np.testing.assert_allclose(updates["backbone"]["w"], -0.1)
  np.testing.assert_allclose(updates["head"]["w"], -1.0)


def test_coupled_weight_decay_and_poly_schedule():
  params = {"backbone": {"w": jnp.full(2, 2.0)}}
  oc = _optim_config(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.1, head_lr_mult=1.0, schedule="poly",
                     poly_power=1.0)
  tx = optim.make_optimizer(oc, 4, params)
  updates, _ = tx.update({"backbone": {"w": jnp.zeros(2)}}, tx.init(params), params, value=jnp.float32(0))
  np.testing.assert_allclose(updates["backbone"]["w"], -0.5 * 0.1 * 2.0)  # coupled L2: grad += wd * w
  lr = optim.learning_rate(oc, 4)
  np.testing.assert_allclose([lr(0), lr(2), lr(4)], [0.5, 0.25, 0.0], atol=1e-7)


def test_plateau_reduces_the_scale_after_patience():
  params = {"backbone": {"w": jnp.zeros(1)}}
  oc = _optim_config(name="adam", lr=1e-3, weight_decay=0.0, head_lr_mult=1.0, schedule="plateau",
                     plateau_factor=0.5, plateau_patience=2, plateau_threshold=1e-3)
  tx = optim.make_optimizer(oc, 100, params)
  state = tx.init(params)
  from maskseg_jax.methods.base import current_lr_scale
  for _ in range(4):
    _, state = tx.update({"backbone": {"w": jnp.ones(1)}}, state, params, value=jnp.float32(1.0))
  assert float(current_lr_scale(state)) == pytest.approx(0.5)


def test_unknown_optimizer_and_schedule_are_config_errors():
  with pytest.raises(ConfigError, match="optim.name='lion'"):
    optim.make_optimizer(_optim_config(name="lion"), 10, {"w": jnp.ones(1)})
  with pytest.raises(ConfigError, match="optim.schedule='exp'"):
    optim.learning_rate(_optim_config(schedule="exp"), 10)


def test_window_starts_cover_the_image():
  assert evaluate.window_starts(10, 4, 3) == [0, 3, 6]
  assert evaluate.window_starts(11, 4, 3) == [0, 3, 6, 7]
  assert evaluate.window_starts(4, 8, 3) == [0]


def test_sliding_window_equals_whole_image_for_a_pixelwise_model():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  logits_fn = lambda x: x @ w  # per-pixel: windows see exactly what the whole image sees
  images = jnp.asarray(rng.normal(size=(2, 13, 17, 3)), jnp.float32)
  probs = evaluate.sliding_window_probs(logits_fn, images, (6, 8), (4, 5), 5)
  np.testing.assert_allclose(probs, jax.nn.softmax(logits_fn(images), -1), rtol=1e-5, atol=1e-6)


def test_checkpoints_keep_latest_and_best(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), keep=1, best_metric="val/miou")
  state = {"w": np.zeros(2, np.float32)}
  for step, miou in [(1, 0.5), (2, 0.9), (3, 0.4), (4, None)]:
    ck.save(step, {"w": np.full(2, step, np.float32)}, metrics=None if miou is None else {"val/miou": miou})
  kept = ck.all_steps()
  assert 2 in kept and 4 in kept and 1 not in kept and 3 not in kept
  restored, meta = ck.restore(checkpointing.abstract_like(state), step=2)
  np.testing.assert_array_equal(restored["w"], [2, 2])
  assert meta["metrics"]["val/miou"] == pytest.approx(0.9)
  ck.close()
