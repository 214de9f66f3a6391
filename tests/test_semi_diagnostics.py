"""Pseudo-label diagnostics (hidden truth never reaches a loss), the MaskMatch collapse guards, class-wise
thresholds, and encoders of pretraining runs loaded into the semi-supervised DeepLabV3+."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskseg_jax import checkpointing, pretrained, sharding, train
from maskseg_jax.errors import CheckpointError, ConfigError
from maskseg_jax.methods import base, segmentation
from maskseg_jax.methods.semi_supervised import diagnostics as diag
from maskseg_jax.methods.semi_supervised import ensemble
from maskseg_jax.methods.semi_supervised import model as semi_model
from maskseg_jax.methods.semi_supervised import streams as semi_streams
from maskseg_jax.methods.semi_supervised import task as semi_supervised
from maskseg_jax.methods.semi_supervised import terms as semi_terms
from maskseg_jax.models import build_model
from test_semi_method import tiny_config

# Every new path in one (FixMatch-sized, the cheapest) compilation: diagnostics, a one-scale teacher with the prior guard, class-wise thresholds.
NEW = {"semi.diagnostics": True, "semi.diag_images": 12, "semi.ensemble_scales": (1.0,),
       "semi.ensemble_guard": "prior", "semi.threshold": "flexmatch", "semi.tau": 0.5, "semi.tau_min": 0.2,
       "semi.warmup_steps": 2, "semi.rampup_steps": 4}
FULL = 10  # a state step past the warm-up and ramp: every term at full weight


@functools.lru_cache(maxsize=None)
def _compiled(workdir: str):
  mesh = sharding.make_mesh(1)
  task = semi_supervised.build(tiny_config("fixmatch", **NEW), mesh, workdir)
  return task, train.compile_step(task, mesh), mesh


def _step(task, step, mesh, batch, at: int = FULL):
  """One step from the initial weights with the state's step counter at `at` (the warm-up reads it)."""
  state = jax.tree.map(np.array, task.state)
  state["step"] = np.asarray(at, state["step"].dtype)
  state = sharding.replicate(state, mesh)
  new_state, m = step(state, sharding.to_global(batch, mesh), jax.random.PRNGKey(0))
  return jax.device_get(new_state), {k: float(v) for k, v in jax.device_get(m).items()}


# ------------------------------------------------------------------------------------------ diagnostics

def test_hidden_truth_is_in_the_stream_but_never_in_the_loss(tmp_path_factory):
  task, step, mesh = _compiled(str(tmp_path_factory.getbasetemp() / "diag"))
  batch = next(task.train_iter)
  truth = batch["u_truth"]
  assert truth.shape == batch["u_ignore_mask"].shape and truth.dtype == np.int32
  assert np.all(truth[batch["u_ignore_mask"]] == 255)  # padding has no truth
  assert set(np.unique(truth[~batch["u_ignore_mask"]])) <= set(range(6))
  state, m = _step(task, step, mesh, batch)
  assert {"pl_acc", "pl_acc_conf", "pl_tv"} <= set(m) and 0.0 <= m["pl_acc"] <= 1.0
  rng = np.random.default_rng(0)
  for other in (np.zeros_like(truth), rng.integers(0, 6, truth.shape).astype(np.int32), np.full_like(truth, 255)):
    state2, m2 = _step(task, step, mesh, {**batch, "u_truth": other})
    for k in m:
      if not k.startswith("pl_"):
        assert m2[k] == m[k], k  # bit-identical losses, confidence fraction, lr
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state2)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert m2["pl_acc"] == 0.0  # no truth at all: nothing counted


@pytest.mark.parametrize("on", [True, False])
def test_diagnostics_are_in_metrics_jsonl_by_default(on, tmp_path):
  """A plain semi run logs pseudo-label accuracy, pass rate and class shares (semi.diagnostics defaults on, the
  synthetic unlabeled images have truth); semi.diagnostics=False removes every one of those keys."""
  assert tiny_config("fixmatch").semi.diagnostics is True
  over = {"train.steps": 2, "train.log_every": 1, "train.eval_every": 2, "train.checkpoint_every": 2,
          "semi.diag_images": 8, **({} if on else {"semi.diagnostics": False})}
  train.run(tiny_config("fixmatch", **over), str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_rows = [r for r in rows if r["split"] == "train"]
  evals = [r for r in rows if r["split"] == "eval"]
  assert [r["step"] for r in train_rows] == [1, 2] and evals
  assert all("conf_frac" in r for r in train_rows)  # the step's pass rate is a loss-side metric: always there
  diag_keys = sorted({k for r in rows for k in r if k.startswith(("pl_", "semi_diag/"))})
  if not on:
    assert diag_keys == []
    return
  for r in train_rows:
    assert {"pl_acc", "pl_acc_conf", "pl_tv"} <= set(r) and 0.0 <= r["pl_acc"] <= 1.0
  e = evals[-1]
  names = ("background", "shape_1", "shape_5")
  expected = {"semi_diag/conf_frac", "semi_diag/pl_acc", "semi_diag/pl_tv",
              *(f"semi_diag/{what}/{n}" for what in ("pl_share", "truth_share", "pass") for n in names)}
  assert expected <= set(e)
  assert sum(e[f"semi_diag/truth_share/{n}"] for n in ("background",) + tuple(f"shape_{i}" for i in range(1, 6))) \
      == pytest.approx(1.0, abs=1e-6)


def test_a_source_without_labels_carries_no_truth():
  assert semi_streams.carries_truth([{"image": np.zeros((2, 2, 3), np.uint8), "label": np.zeros((2, 2))}])
  assert not semi_streams.carries_truth([{"image": np.zeros((2, 2, 3), np.uint8)}])
  assert not semi_streams.carries_truth([])


def test_pseudo_label_sums_on_a_hand_made_batch():
  yhat = jnp.array([[[0, 0, 1, 2]]])
  conf = jnp.array([[[0.9, 0.4, 0.8, 0.99]]])
  truth = jnp.array([[[0, 1, 1, 255]]])
  ignore = jnp.array([[[False, False, False, False]]])
  s = jax.device_get(diag.pseudo_label_sums(yhat, conf, 0.5, ignore, truth, 3))
  assert (s["valid"], s["passed"], s["labeled"], s["labeled_conf"]) == (4, 3, 3, 2)
  assert (s["correct"], s["correct_conf"]) == (2, 2)
  np.testing.assert_array_equal(s["truth"], [1, 2, 0])
  np.testing.assert_array_equal(s["pred_conf"], [1, 1, 0])
  out = diag.summarize(s, "d", ["a", "b", "c"])
  assert out["d/conf_frac"] == 0.75 and out["d/pl_acc"] == pytest.approx(2 / 3) and out["d/pl_acc_conf"] == 1.0
  assert out["d/pass/b"] == 0.5 and out["d/truth_share/b"] == pytest.approx(2 / 3)
  assert out["d/pl_tv"] == pytest.approx(0.5 * (abs(0.5 - 1 / 3) + abs(0.5 - 2 / 3)))
  # Class-wise thresholds: pixel 1 (class 0, conf 0.4) passes a 0.3 bar for class 0.
  thr = jnp.array([0.3, 0.5, 0.5])[yhat]
  assert float(diag.pseudo_label_sums(yhat, conf, thr, ignore, truth, 3)["passed"]) == 4


def test_eval_diagnostics_measure_the_unlabeled_truth(tmp_path_factory):
  task, _, _ = _compiled(str(tmp_path_factory.getbasetemp() / "diag"))
  assert len(task.evaluators) == 2
  evaluator = task.evaluators[1]
  out = evaluator.run(task.state).scalars
  for k in ("conf_frac", "pl_acc", "pl_acc_conf", "pl_tv", "pl_classes"):
    assert 0.0 <= out[f"semi_diag/{k}"] <= 6.0, k
  truth = {k.split("/")[-1]: v for k, v in out.items() if k.startswith("semi_diag/truth_share/")}
  pl = [v for k, v in out.items() if k.startswith("semi_diag/pl_share_all/")]
  assert len(truth) == 6 and sum(pl) == pytest.approx(1.0)
  # The truth shares are those of the first 12 unlabeled images, read here straight from the source.
  _, unlabeled, _ = semi_streams.load_semi_sources(tiny_config("fixmatch", **NEW), "/nonexistent")
  labels = np.concatenate([unlabeled[i]["label"].ravel() for i in range(12)])
  labels = labels[labels < 6]
  want = np.bincount(labels, minlength=6) / labels.size
  names = unlabeled.class_names or [str(c) for c in range(6)]
  np.testing.assert_allclose([truth[n] for n in names], want, atol=1e-6)
  assert all(f"semi_diag/tau/{n}" in out for n in names)  # class-wise thresholds reported


# ------------------------------------------------------------------------------------------ guards, thresholds

def _two_scales():
  """Pixel 0: both scales say class 0 (0.97, 0.96). Pixel 1: scale A sees a small class 2 at 0.97, scale B
  (where it vanished) says class 0 at 0.6: the plain mean is class 2 at 0.57 (< tau 0.95)."""
  a = jnp.array([[[[0.97, 0.02, 0.01], [0.02, 0.01, 0.97]]]])
  b = jnp.array([[[[0.96, 0.02, 0.02], [0.60, 0.23, 0.17]]]])
  return [a, b]


def test_confident_guard_keeps_a_small_object_the_mean_drops():
  probs = _two_scales()
  thr = lambda y: 0.95  # noqa: E731
  none = semi_terms.ENSEMBLE_GUARDS["none"](probs, thr, None, None)
  guarded = semi_terms.ENSEMBLE_GUARDS["confident"](probs, thr, None, None)
  np.testing.assert_allclose(none, ensemble.mean_probs(probs))
  assert float(none[0, 0, 1].max()) < 0.95  # the small object is lost to the threshold by the plain mean
  np.testing.assert_allclose(guarded[0, 0, 1], probs[0][0, 0, 1])  # only the confident scale counts
  np.testing.assert_allclose(guarded[0, 0, 0], none[0, 0, 0])      # both confident: unchanged
  # No scale confident: the plain mean.
  low = [p * 0.5 + 0.5 / 3 for p in probs]
  np.testing.assert_allclose(ensemble.confident_mean(low, thr), ensemble.mean_probs(low), rtol=1e-6)


def test_prior_guard_restores_the_class_prior():
  """An ensemble that gives class 0 to 80% of pixels under a uniform labeled prior: alignment moves the
  marginal towards the prior, so ambiguous pixels change to the shrunken class; confident ones stay."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
  logits[..., 0] += 1.2
  probs = jax.nn.softmax(jnp.asarray(logits), -1)
  prior = jnp.array([0.5, 0.5])
  valid = jnp.ones(probs.shape[:3], bool)
  aligned = semi_terms.ENSEMBLE_GUARDS["prior"]([probs], None, prior, valid)
  before, after = jnp.argmax(probs, -1), jnp.argmax(aligned, -1)
  assert float(jnp.mean(before == 1)) < 0.3 < float(jnp.mean(after == 1))
  assert bool(jnp.all((before == 1) <= (after == 1)))  # nothing moves away from the boosted class
  np.testing.assert_allclose(jnp.sum(aligned, -1), 1.0, rtol=1e-6)
  assert abs(float(jnp.mean(aligned[..., 1])) - 0.5) < abs(float(jnp.mean(probs[..., 1])) - 0.5)


def test_step_updates_the_prior_and_class_thresholds(tmp_path_factory):
  task, step, mesh = _compiled(str(tmp_path_factory.getbasetemp() / "diag"))
  batch = next(task.train_iter)
  state, m = _step(task, step, mesh, batch)
  labeled, _, _ = semi_streams.load_semi_sources(tiny_config("fixmatch", **NEW), "/nonexistent",
                                                                 unlabeled=False)
  start = semi_model.labeled_class_prior(labeled, 6, 255)
  every = np.concatenate([labeled[i]["label"].ravel() for i in range(len(labeled))])
  np.testing.assert_allclose(start, np.bincount(every[every < 6], minlength=6) / np.sum(every < 6), rtol=1e-6)
  np.testing.assert_allclose(task.state["extra"]["class_prior"], start)
  y = batch["label"][batch["label"] < 6]
  want = 0.99 * start + 0.01 * np.bincount(y, minlength=6) / y.size
  np.testing.assert_allclose(state["extra"]["class_prior"], want, rtol=1e-5)
  # Starting from beta = 1 every class's bar is tau, so the confident shares add up to the step's conf_frac.
  assert float(np.sum(state["extra"]["class_conf"])) == pytest.approx(0.99 + 0.01 * m["conf_frac"], rel=1e-5)
  terms = semi_terms.Terms.from_config(tiny_config("fixmatch", **NEW))
  tau_c = np.asarray(semi_terms.class_thresholds(terms, {"class_conf": jnp.array([0.4, 0.2, 0, 0, 0, 0.4])}))
  np.testing.assert_allclose(tau_c, [0.5, max(0.2, 0.5 * 0.5 / 1.5), 0.2, 0.2, 0.2, 0.5], rtol=1e-6)


def test_warmup_then_ramp_of_the_unlabeled_terms(tmp_path_factory):
  """FixMatch: 2 labeled-only warm-up steps (L = L_x, the unlabeled images not used at all), then
  L = (1 - r / 2) L_x + r L_s1 / 2 with r = (step - 1) / 4 up to 1 (UniMatch's 0.5 (L_x + L_s1))."""
  task, step, mesh = _compiled(str(tmp_path_factory.getbasetemp() / "diag"))
  assert task.warmup_steps == 2
  warm = train.compile_step(task, mesh, warmup=True)
  batch = next(task.train_iter)
  noise = {**batch, "u_image": np.random.default_rng(1).normal(size=batch["u_image"].shape).astype(np.float32)}
  for at in (0, 1):
    state, m = _step(task, warm, mesh, batch, at)
    state2, m2 = _step(task, warm, mesh, noise, at)
    assert m["unlabeled_weight"] == 0 and m["loss_s1"] == 0 and m["loss"] == m["loss_x"] > 0
    assert m2 == m  # the unlabeled images do not reach a warm-up step
    for a, b in zip(jax.tree.leaves(state2), jax.tree.leaves(state)):
      np.testing.assert_array_equal(a, b)
    assert set(m) == set(_step(task, step, mesh, batch, at)[1])  # the full step's keys, so logs line up
  for at, r in ((2, 0.25), (4, 0.75), (FULL, 1.0)):
    _, m = _step(task, step, mesh, batch, at)
    assert m["unlabeled_weight"] == r
    assert m["loss"] == pytest.approx((1 - r / 2) * m["loss_x"] + r / 2 * m["loss_s1"], rel=1e-6), at
    _, m2 = _step(task, step, mesh, noise, at)
    assert m2["loss_s1"] != m["loss_s1"]  # past the warm-up, they do
  assert m["loss_s1"] > 0


def test_guard_and_threshold_configs_are_checked():
  with pytest.raises(ConfigError, match="ensemble_scales is empty"):
    semi_terms.Terms.from_config(tiny_config("unimatch", **{"semi.ensemble_guard": "prior"}))
  with pytest.raises(ConfigError, match="ensemble_guard='nope'"):
    semi_terms.Terms.from_config(tiny_config("maskmatch", **{"semi.ensemble_guard": "nope"}))
  with pytest.raises(ConfigError, match="tau_min"):
    semi_terms.Terms.from_config(tiny_config("unimatch", **{"semi.threshold": "flexmatch", "semi.tau_min": 0.99}))


# ------------------------------------------------------------------------------------------ encoders

def _fake_pretraining_run(root, stages: int, **model):
  """A selective (stages > 1) or random-masking (1 stage) pretraining folder of a 3-channel U-Net ResNet-34,
  written as the stage driver writes it (stage_k/checkpoints + stage_k/done)."""
  config = tiny_config("unimatch", **{f"model.{k}": v for k, v in {"name": "unet", "backbone": "resnet34",
                                                                    "deep_stem": False, **model}.items()})
  net = build_model(config.model, 3, nnx.Rngs(params=7))
  _, params, stats = base.split_model(net)
  params = jax.tree.map(lambda a: np.asarray(a) + 0.5, params)  # distinct from any fresh init
  for k in range(stages):
    folder = os.path.join(root, f"stage_{k}")
    ck = checkpointing.Checkpointer(os.path.join(folder, "checkpoints"), best_metric=None)
    ck.save(3, {"step": np.int32(3), "params": params, "batch_stats": stats})
    ck.close()
    open(os.path.join(folder, "done"), "w").write("{}")
  return pretrained.flatten(params), pretrained.flatten(stats)


@pytest.mark.parametrize("stages", [2, 1])
def test_pretraining_encoder_into_semi_deeplab_and_supervised_unet(stages, tmp_path):
  run = str(tmp_path / "pre")
  saved_p, saved_s = _fake_pretraining_run(run, stages)
  over = {"model.backbone": "resnet34", "model.deep_stem": False}
  config = tiny_config("unimatch", **over, **{"model.init_from": "encoder:" + run})
  terms = semi_terms.Terms.from_config(config)
  _, _, state = semi_model.build_model_and_state(config, terms)
  params = pretrained.flatten(state["params"])
  scratch = pretrained.flatten(semi_model.build_model_and_state(tiny_config("unimatch", **over), terms)[2]["params"])
  for name, value in params.items():
    inner = name[len("segmenter/"):]
    want = saved_p[inner] if inner.startswith("backbone/") else scratch[name]
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want), err_msg=name)
  stats = pretrained.flatten(state["batch_stats"])
  for name, value in stats.items():
    if "/backbone/" in f"/{name}":
      np.testing.assert_array_equal(np.asarray(value), np.asarray(saved_s[name[len("segmenter/"):]]))
  # Supervised U-Net fine-tuning from the same folder: everything but the head.
  sup = tiny_config("supervised", **{"model.name": "unet", **over, "model.init_from": run})
  sup_params = pretrained.flatten(segmentation.init_model_state(sup, 6)[2]["params"])
  for name, value in sup_params.items():
    if not name.startswith("head/"):
      np.testing.assert_array_equal(np.asarray(value), np.asarray(saved_p[name]), err_msg=name)


def test_semi_unet_from_pretraining_perturbs_every_encoder_map(tmp_path, monkeypatch):
  """UniMatch + S4MIM on the pretraining's own U-Net ResNet-34: every weight but the head comes from the run, the
  feature-perturbed branch drops channels of all four encoder maps, and every term is finite."""
  from maskseg_jax.losses import consistency
  from maskseg_jax.methods.semi_supervised import step as semi_step
  run = str(tmp_path / "pre")
  saved_p, _ = _fake_pretraining_run(run, 1)
  over = {"model.name": "unet", "model.backbone": "resnet34", "model.deep_stem": False}
  config = tiny_config("s4mim", **over, **{"model.init_from": run})
  terms = semi_terms.Terms.from_config(config)
  mdef, _, state = semi_model.build_model_and_state(config, terms)
  params = pretrained.flatten(state["params"])
  seg_names = [n for n in params if n.startswith("segmenter/")]
  assert any(n.startswith("segmenter/up4/") for n in seg_names)
  for name in seg_names:
    inner = name[len("segmenter/"):]
    if not inner.startswith("head/"):
      np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(saved_p[inner]), err_msg=name)
  labeled, unlabeled, _ = semi_streams.load_semi_sources(config, str(tmp_path))
  batch = {k: jnp.asarray(v) for k, v in next(semi_streams.train_stream(config, labeled, unlabeled)).items()}
  keys = semi_step.step_keys(jax.random.PRNGKey(0))
  dropped = []
  real = consistency.channel_dropout
  monkeypatch.setattr(consistency, "channel_dropout", lambda x, *a, **kw: dropped.append(x.shape) or real(x, *a, **kw))
  model = mdef.merge(state["params"], state["batch_stats"])
  loss, out, _ = semi_step._forward(model, state, batch, keys, None, terms)
  b = config.data.batch_size
  assert sorted(s[-1] for s in dropped) == sorted(model.segmenter.backbone.channels[f"stride{r}"] for r in (4, 8, 16, 32))
  assert all(s[0] == 2 * b for s in dropped)  # semi.fp_labeled: labeled and weak rows, as UniMatch
  assert np.isfinite(float(loss)) and {"loss_x", "loss_fp", "loss_s1", "loss_rec"} <= set(out)
  assert all(np.isfinite(float(v)) for v in out.values())


def test_encoder_mismatches_name_the_variable(tmp_path):
  run = str(tmp_path / "pre")
  _fake_pretraining_run(run, 1)
  over = {"model.backbone": "resnet34", "model.deep_stem": False}
  with pytest.raises(CheckpointError, match=r"no variable 'aspp/.*encoder:PATH"):
    semi_model.build_model_and_state(tiny_config("unimatch", **over, **{"model.init_from": run}),
                                          semi_terms.Terms.from_config(tiny_config("unimatch")))
  deep = tiny_config("unimatch", **{"model.backbone": "resnet34", "model.init_from": "encoder:" + run})
  with pytest.raises(CheckpointError, match=r"'backbone/stem/0/conv/kernel' with shape \(7, 7, 3, 8\).*"
                                            r"\(3, 3, 3, 8\).*deep_stem"):
    semi_model.build_model_and_state(deep, semi_terms.Terms.from_config(deep))
  r18 = tiny_config("unimatch", **{**over, "model.backbone": "resnet18", "model.init_from": "encoder:" + run})
  with pytest.raises(CheckpointError, match=r"holds 'backbone/layer1/2/.*no place"):
    semi_model.build_model_and_state(r18, semi_terms.Terms.from_config(r18))
