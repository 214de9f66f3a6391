"""The points where UniMatch's step meets its reference implementation (experiments/parity_unimatch.py), checked
without PyTorch: the channel masks the step draws (`step_keys`, `channel_keep`), the feature-perturbed pass over
labeled and weak rows (`semi.fp_labeled`), CutMix boxes labeled by another pass (`semi.mix_teacher`), and
corner-aligned bilinear upsampling (`model.align_corners`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskseg_jax.errors import ConfigError
from maskseg_jax.losses import consistency as cons
from maskseg_jax.methods.semi_supervised import model as semi_model
from maskseg_jax.methods.semi_supervised import step as semi_step
from maskseg_jax.methods.semi_supervised import streams as semi_streams
from maskseg_jax.methods.semi_supervised import terms as semi_terms
from maskseg_jax.models import build_model
from maskseg_jax.models.resnet import logits_at, resize_to
from test_semi_method import tiny_config


# ------------------------------------------------------------------------------------------ masks and keys

def test_channel_keep_is_the_mask_channel_dropout_applies():
  key = jax.random.key(3)
  x = jax.random.normal(jax.random.key(1), (6, 5, 4, 32))
  keep = np.asarray(cons.channel_keep(key, x.shape, 0.5))
  assert keep.shape == (6, 1, 1, 32) and 0 < keep.mean() < 1
  np.testing.assert_allclose(cons.channel_dropout(x, key, 0.5), np.where(keep, np.asarray(x) * 2.0, 0.0), rtol=1e-6)


def test_step_keys_are_split_by_use():
  keys = semi_step.step_keys(jax.random.key(0))
  assert tuple(keys) == semi_step.STEP_KEYS
  split = jax.random.split(jax.random.key(0), len(semi_step.STEP_KEYS))
  for k, ref in zip(keys.values(), split):
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(ref))


def test_with_dropped_copy_rows_labeled_and_weak():
  b, c = 3, 8
  f_x = jnp.arange(b * 2 * 2 * c, dtype=jnp.float32).reshape(b, 2, 2, c) + 1.0
  f_u = -f_x
  joined = semi_step._join([f_x, f_u])
  key = jax.random.key(7)
  keep = np.asarray(cons.channel_keep(key, joined.shape, 0.5))  # joined order x0, u0, x1, u1, ...
  parts = semi_step._unjoin(semi_step._with_dropped_copy(joined, key, 0.5, labeled=True), 4)
  np.testing.assert_array_equal(parts[0], f_x)
  np.testing.assert_array_equal(parts[1], f_u)
  np.testing.assert_allclose(parts[2], np.where(keep[0::2], 2.0 * np.asarray(f_x), 0.0))
  np.testing.assert_allclose(parts[3], np.where(keep[1::2], 2.0 * np.asarray(f_u), 0.0))
  weak_only = semi_step._unjoin(semi_step._with_dropped_copy(joined, key, 0.5, labeled=False), 3)
  keep_u = np.asarray(cons.channel_keep(key, f_u.shape, 0.5))
  np.testing.assert_allclose(weak_only[2], np.where(keep_u, 2.0 * np.asarray(f_u), 0.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(config, terms, mdef, state, batch) of the tiny UniMatch config: no threshold, no ASPP dropout."""
  config = tiny_config("unimatch", **{"semi.tau": 0.0, "model.dropout": 0.0})
  terms = semi_terms.Terms.from_config(config)
  mdef, _, state = semi_model.build_model_and_state(config, terms)
  labeled, unlabeled, _ = semi_streams.load_semi_sources(config, str(tmp_path_factory.mktemp("pts")))
  batch = {k: jnp.asarray(v) for k, v in next(semi_streams.train_stream(config, labeled, unlabeled)).items()}
  return config, terms, mdef, state, batch


def _forward(tiny, monkeypatch=None, terms=None, batch=None, mix_probs=None, seed=0):
  config, terms0, mdef, state, batch0 = tiny
  model = mdef.merge(state["params"], state["batch_stats"])
  return semi_step._forward(model, state, batch0 if batch is None else batch, semi_step.step_keys(
      jax.random.key(seed)), None, terms0 if terms is None else terms, mix_probs)


@pytest.mark.parametrize("labeled", [True, False])
def test_step_draws_fp_masks_from_its_keys(tiny, monkeypatch, labeled):
  """The FP branch drops (low, high) with step_keys' fp_low / fp_high; with fp_labeled over 2B rows."""
  config, terms, *_ = tiny
  seen = []
  real = cons.channel_dropout
  monkeypatch.setattr(cons, "channel_dropout", lambda x, key, rate: seen.append((x.shape, key)) or real(x, key, rate))
  import dataclasses
  _forward(tiny, terms=dataclasses.replace(terms, fp_labeled=labeled))
  keys = semi_step.step_keys(jax.random.key(0))
  b = config.data.batch_size
  assert [s[0] for s, _ in seen] == [(2 if labeled else 1) * b] * 2
  for (_, key), name in zip(seen, ("fp_low", "fp_high")):
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(keys[name]))


def test_mix_probs_label_only_the_cutmix_boxes(tiny):
  """An other labelling of the partners changes the strong terms where boxes exist, nothing else."""
  config, terms, mdef, state, batch = tiny
  b, h, w = batch["u_image"].shape[:3]
  onehot = jax.nn.one_hot(jnp.zeros((b, h, w), jnp.int32), terms.num_classes)  # every partner pixel class 0
  _, base, _ = _forward(tiny)
  _, mixed, _ = _forward(tiny, mix_probs=onehot)
  for k in ("loss_x", "loss_fp", "conf_frac"):
    assert mixed[k] == base[k], k
  box1 = np.asarray(batch["u_cutmix_box1"])
  assert box1.any()
  assert float(mixed["loss_s1"]) != float(base["loss_s1"])
  no_box = {**batch, "u_cutmix_box1": jnp.zeros_like(batch["u_cutmix_box1"]),
            "u_cutmix_box2": jnp.zeros_like(batch["u_cutmix_box2"])}
  _, base0, _ = _forward(tiny, batch=no_box)
  _, mixed0, _ = _forward(tiny, batch=no_box, mix_probs=onehot)
  assert float(mixed0["loss_s1"]) == float(base0["loss_s1"]) and float(mixed0["loss_s2"]) == float(base0["loss_s2"])


def test_cutmix_targets_from_another_source():
  yhat = jnp.zeros((2, 3, 3), jnp.int32)
  conf = jnp.full((2, 3, 3), 0.5)
  ignore = jnp.zeros((2, 3, 3), bool)
  other = (jnp.stack([jnp.full((3, 3), 4), jnp.full((3, 3), 7)]).astype(jnp.int32), jnp.full((2, 3, 3), 0.9),
           jnp.ones((2, 3, 3), bool))
  box = jnp.zeros((2, 3, 3), bool).at[:, 0, :].set(True)
  y, c, ig = cons.cutmix_targets(yhat, conf, ignore, box, cons.roll_partner(2), source=other)
  np.testing.assert_array_equal(y[0, 0], [7, 7, 7])  # sample 0's partner is 1: its labels from `other`
  np.testing.assert_array_equal(y[1, 0], [4, 4, 4])
  assert int(y[:, 1:].sum()) == 0 and float(c[0, 0, 0]) == pytest.approx(0.9) and float(c[0, 1, 0]) == 0.5
  assert bool(ig[:, 0].all()) and not bool(ig[:, 1:].any())


def test_mix_teacher_config_is_checked():
  with pytest.raises(ConfigError, match="mix_teacher='bogus'"):
    semi_terms.Terms.from_config(tiny_config("unimatch", **{"semi.mix_teacher": "bogus"}))
  with pytest.raises(ConfigError, match="teacher pass"):
    semi_terms.Terms.from_config(tiny_config("unimatch", **{"semi.mix_teacher": "eval", "semi.ema_decay": 0.99}))


def test_eval_mix_teacher_runs_an_eval_pass(tiny, monkeypatch):
  """mix_teacher='eval': the train step labels the boxes from `_eval_probs` of the unlabeled images."""
  import dataclasses
  config, terms, mdef, state, batch = tiny
  calls = []
  real = semi_step._eval_probs
  monkeypatch.setattr(semi_step, "_eval_probs", lambda m, s, im: calls.append(im.shape) or real(m, s, im))
  from maskseg_jax import optim
  tx_lr = optim.learning_rate(config.optim, config.train.steps)
  _, tx, _ = semi_model.build_model_and_state(config, terms)
  for mix, expected in (("weak", []), ("eval", [batch["u_image"].shape])):
    calls.clear()
    step = semi_step.make_train_step(mdef, tx, tx_lr, dataclasses.replace(terms, mix_teacher=mix))
    jax.eval_shape(step, state, batch, jax.random.key(0))
    assert calls == expected, mix


# ------------------------------------------------------------------------------------------ align corners

def test_align_corners_resize_maps_corners_onto_corners():
  x = jnp.asarray([[0.0, 1.0]]).reshape(1, 1, 2, 1)
  np.testing.assert_allclose(resize_to(x, (1, 3), align_corners=True)[0, 0, :, 0], [0.0, 0.5, 1.0])
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  y = np.asarray(resize_to(x, (17, 13), align_corners=True))
  # 5 -> 17 is exactly 4x on the corner grid: every 4th row is an input row; halfway rows are means.
  np.testing.assert_allclose(y[:, ::4, ::4], np.asarray(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y[:, 2, ::4], (np.asarray(x)[:, 0] + np.asarray(x)[:, 1]) / 2, rtol=1e-6, atol=1e-6)
  half_pixel = np.asarray(resize_to(x, (17, 13)))
  assert np.abs(half_pixel - y).max() > 1e-2  # the two grids differ
  assert resize_to(x, (5, 4), align_corners=True) is x
  assert logits_at(x.astype(jnp.bfloat16), (17, 13), align_corners=True).dtype == jnp.float32


def test_deeplab_reads_align_corners_from_the_config():
  c = tiny_config("unimatch")
  assert c.model.align_corners and c.model.dropout == 0.0  # configs/semi.py: UniMatch's DeepLabV3+
  from flax import nnx
  on = nnx.eval_shape(lambda: build_model(c.model, 6, nnx.Rngs(0)))
  assert on.align_corners is True
  c.unlock()
  c.model.align_corners = False
  assert nnx.eval_shape(lambda: build_model(c.model, 6, nnx.Rngs(0))).align_corners is False
