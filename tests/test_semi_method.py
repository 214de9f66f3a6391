"""The semi-supervised trainer: every variant's step, the loss weighting checked against an independent forward,
prototype updates through the real step, sharded == single-device, exact resume of the zipped data stream,
split files, and an end-to-end train / preempt / resume / evaluate run."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fixtures
from maskseg_jax import checkpointing, sharding, train
from maskseg_jax import config_base
from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.methods import base
from maskseg_jax.methods.semi_supervised import model as semi_model
from maskseg_jax.methods.semi_supervised import step as semi_step
from maskseg_jax.methods.semi_supervised import streams as semi_streams
from maskseg_jax.methods.semi_supervised import task as semi_supervised
from maskseg_jax.methods.semi_supervised import terms as semi_terms

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
DIAG = ("pl_acc", "pl_acc_conf", "pl_tv")  # semi.diagnostics, on by default where the unlabeled images have truth
UNIMATCH = ("loss", "loss_x", "loss_s1", "loss_s2", "loss_fp", "conf_frac", "lr") + DIAG
S4MIM = ("loss_rec", "loss_agg", "loss_sem", "proto_classes")
EXPECTED_KEYS = {
    "supervised": {"loss", "loss_x", "lr"},
    "fixmatch": {"loss", "loss_x", "loss_s1", "conf_frac", "lr", *DIAG},
    "unimatch": set(UNIMATCH),
    "s4mim": set(UNIMATCH + S4MIM),
    "maskmatch": set(UNIMATCH + ("loss_mask",)),
    "all": set(UNIMATCH + S4MIM + ("loss_mask",)),
}
# The "all" variant also switches on OHEM and an EMA teacher, so every code path is compiled and checked.
ALL_OVERRIDES = (("semi.ohem", True), ("semi.ohem_min_kept", 1000), ("semi.ema_decay", 0.99))
# UniMatch with its inputs controllable: no pseudo-label threshold, no feature or ASPP dropout.
CONTROLLED = (("semi.tau", 0.0), ("semi.fp_dropout", 0.0), ("model.dropout", 0.0))


def _overrides(variant):
  """Per-variant overrides, chosen so that tests share compilations (each costs ~10-60 s on 2 cores)."""
  return {"all": ALL_OVERRIDES, "unimatch": CONTROLLED}.get(variant, ())


def _load_config(name: str, arg: str | None):
  return config_base.load_config(name, arg)

def tiny_config(variant: str = "unimatch", **overrides):
  c = _load_config("semi", f"synthetic,{variant}")
  c.unlock()
  c.data.synthetic.num_train = 40
  c.data.synthetic.num_val = 8
  c.data.synthetic.image_size = (32, 32)
  c.data.train_split = "train[:8]"
  c.semi.unlabeled_split = "train[8:]"
  c.data.crop_size = (32, 32)
  c.data.eval_size = (32, 32)
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.validate_items = 4
  c.model.width = 0.125
  c.train.steps = 4
  c.train.log_every = 2
  c.train.eval_every = 4
  c.train.checkpoint_every = 2
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  c.lock()
  return c


@functools.lru_cache(maxsize=None)
def compiled(variant: str, devices: int, workdir: str, overrides: tuple = ()):
  """(task, jitted step, mesh) for a variant; cached so tests share one compilation."""
  mesh = sharding.make_mesh(devices)
  task = semi_supervised.build(tiny_config(variant, **dict(overrides)), mesh, workdir)
  return task, train.compile_step(task, mesh), mesh


def run_step(variant, tmp_path_factory, devices=1, overrides=(), state=None, batch=None, seed=0):
  task, step, mesh = compiled(variant, devices, str(tmp_path_factory.getbasetemp() / f"{variant}{devices}"),
                              tuple(overrides))
  # Host copies: the step donates its state, and on one device `replicate` may reuse the task's buffers.
  state = sharding.replicate(_copy(task.state if state is None else state), mesh)
  batch = next(task.train_iter) if batch is None else batch
  new_state, metrics = step(state, sharding.to_global(batch, mesh), jax.random.PRNGKey(seed))
  return jax.device_get(new_state), {k: float(v) for k, v in jax.device_get(metrics).items()}, task


def _copy(tree):
  return jax.tree.map(lambda a: np.array(a), tree)


# ------------------------------------------------------------------------------------------ every variant

def sc_weight(variant: str, name: str) -> float:
  return float(tiny_config(variant).semi[name])


@pytest.mark.parametrize("variant", sorted(EXPECTED_KEYS))
def test_variant_step_metrics_and_total(variant, tmp_path_factory):
  new_state, m, task = run_step(variant, tmp_path_factory, overrides=_overrides(variant))
  assert set(m) == EXPECTED_KEYS[variant]
  assert all(np.isfinite(v) for v in m.values()), m
  assert int(new_state["step"]) == 1
  changed = lambda key: any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(  # noqa: E731
      jax.tree.leaves(new_state["params"][key]), jax.tree.leaves(task.state["params"][key])))
  assert changed("segmenter")
  if sc_weight(variant, "l_rec") > 0:  # the class-wise heads are parameters the optimizer trains
    assert changed("rec_head")
  else:
    assert "rec_head" not in task.state["params"]
  if "conf_frac" in m:
    assert 0.0 <= m["conf_frac"] <= 1.0
  # The total is the documented weighting of the reported terms (semi_config presets).
  sc = tiny_config(variant).semi
  expected = sc.scale * (sc.w_x * m["loss_x"] + sc.w_s1 * m.get("loss_s1", 0.0) + sc.w_s2 * m.get("loss_s2", 0.0)
                         + sc.w_fp * m.get("loss_fp", 0.0))
  expected += sum(sc[w] * m.get(k, 0.0) for w, k in (("l_rec", "loss_rec"), ("l_agg", "loss_agg"),
                                                      ("l_sem", "loss_sem"), ("l_mask", "loss_mask")))
  assert m["loss"] == pytest.approx(expected, rel=1e-5)
  if variant == "supervised":  # trains on the labeled subset only: no unlabeled stream at all
    assert set(task.train_iter.streams) == {""} and m["loss"] == pytest.approx(m["loss_x"], rel=1e-6)
  else:
    assert set(task.train_iter.streams) == {"", "u_"}


def test_paper_weighting_against_an_independent_forward(tmp_path_factory):
  """Weak = strong = labeled image, no CutMix, no dropout, tau 0, labels = the model's own argmax: every term is
  the mean of -log max softmax of one plain forward (H), so L = (H + 0.25 H + 0.25 H + 0.5 H) / 2 = H."""
  over = CONTROLLED
  config = tiny_config("unimatch", **dict(over))
  task, _, _ = compiled("unimatch", 1, str(tmp_path_factory.getbasetemp() / "unimatch1"), over)
  # The same initial model, built independently (deterministic by seed), for a reference forward in train-mode
  # BN: the step's passes see [a, a], [a, a, a, a] and [a, a], whose batch statistics equal those of [a].
  mdef, _, ref_state = semi_model.build_model_and_state(config, semi_terms.Terms.from_config(config))
  for a, b in zip(jax.tree.leaves(ref_state["params"]), jax.tree.leaves(task.state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  image = next(task.train_iter)["image"]
  logits = mdef.merge(ref_state["params"], ref_state["batch_stats"])(jnp.asarray(image), train=True)
  probs = jax.nn.softmax(logits, -1)
  labels = np.asarray(jnp.argmax(probs, -1), np.int32)
  h = float(jnp.mean(-jnp.log(jnp.max(probs, -1))))
  no_box = np.zeros(image.shape[:3], bool)
  batch = {"image": image, "label": labels, "u_image": image, "u_image_s1": image, "u_image_s2": image,
           "u_cutmix_box1": no_box, "u_cutmix_box2": no_box, "u_ignore_mask": no_box, "u_truth": labels}
  _, m, _ = run_step("unimatch", tmp_path_factory, overrides=over, batch=batch)
  for k in ("loss_x", "loss_s1", "loss_s2", "loss_fp"):
    assert m[k] == pytest.approx(h, rel=1e-4), (k, m[k], h)
  assert m["loss"] == pytest.approx(h, rel=1e-4)
  assert m["conf_frac"] == 1.0
  # Every unlabeled pixel is padding: the unsupervised terms count nothing and L = L_x / 2.
  _, m2, _ = run_step("unimatch", tmp_path_factory, overrides=over,
                      batch={**batch, "u_ignore_mask": np.ones_like(no_box)})
  assert m2["loss_s1"] == m2["loss_s2"] == m2["loss_fp"] == m2["conf_frac"] == 0.0
  assert m2["loss"] == pytest.approx(0.5 * m2["loss_x"], rel=1e-6)
  assert m2["loss_x"] == pytest.approx(h, rel=1e-4)


# ------------------------------------------------------------------------------------------ S4MIM prototypes

def test_prototypes_update_only_for_classes_present(tmp_path_factory):
  """Classifier kernel 0 and bias favouring class 3: every pseudo-label is 3 (confidence ~1), so only row 3 of
  the prototype memory moves; a uniform classifier (confidence 1/6 < tau) moves none."""
  task, _, _ = compiled("s4mim", 1, str(tmp_path_factory.getbasetemp() / "s4mim1"), ())
  num_classes, mu = 6, 0.99
  old = np.random.default_rng(0).normal(size=task.state["extra"]["prototypes"].shape).astype(np.float32)
  state = _copy(task.state)
  clf = state["params"]["segmenter"]["classifier"]
  clf["kernel"][...] = np.zeros_like(clf["kernel"][...])
  bias = np.full((num_classes,), -5.0, np.float32)
  bias[3] = 5.0
  clf["bias"][...] = bias
  state["extra"]["prototypes"] = old
  new_state, m, _ = run_step("s4mim", tmp_path_factory, state=state)
  new = np.asarray(new_state["extra"]["prototypes"])
  assert m["proto_classes"] == 1.0 and m["conf_frac"] == 1.0
  others = [c for c in range(num_classes) if c != 3]
  np.testing.assert_array_equal(new[others], old[others])
  assert not np.allclose(new[3], old[3])
  # new = mu old + (1 - mu) v, v a confidence-weighted mean of ReLU features: non-negative.
  v = (new[3] - mu * old[3]) / (1.0 - mu)
  assert v.min() > -1e-3 and v.max() > 0
  clf["bias"][...] = np.zeros_like(bias)
  new_state, m, _ = run_step("s4mim", tmp_path_factory, state=state)
  assert m["proto_classes"] == 0.0 and m["conf_frac"] == 0.0
  np.testing.assert_array_equal(np.asarray(new_state["extra"]["prototypes"]), old)


def test_masked_views_leave_bn_running_statistics_alone(tmp_path):
  """The masked passes (S4MIM, MaskMatch) normalize with their own batch statistics but must not move the
  running statistics that eval uses on clean images: with every term on, the step's BN update equals that of
  the same forward with the masked terms off, and differs from the initial statistics (passes 1-2 count)."""
  import dataclasses
  from flax import nnx
  config = tiny_config("all", **dict(ALL_OVERRIDES))
  terms = semi_terms.Terms.from_config(config)
  mdef, _, state = semi_model.build_model_and_state(config, terms)
  labeled, unlabeled, _ = semi_streams.load_semi_sources(config, str(tmp_path))
  batch = {k: jnp.asarray(v) for k, v in next(semi_streams.train_stream(config, labeled, unlabeled)).items()}
  k = jax.random.split(jax.random.PRNGKey(0), 6)
  keys = dict(dropout=k[0], fp_low=k[1], fp_high=k[2], mim=k[3], mask=k[4], teacher=k[5])

  def running_stats(t):
    model = mdef.merge(state["params"], state["batch_stats"])
    base.reseed_dropout(model, keys["dropout"])
    semi_step._forward(model, state, batch, keys, None, t)
    return jax.tree.leaves(nnx.state(model, nnx.BatchStat))

  with_masked = running_stats(terms)
  without = running_stats(dataclasses.replace(terms, l_rec=0.0, l_agg=0.0, l_sem=0.0, l_mask=0.0))
  for a, b in zip(with_masked, without):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.allclose(a, b) for a, b in zip(with_masked, jax.tree.leaves(state["batch_stats"])))


# ------------------------------------------------------------------------------------------ sharding

def test_sharded_step_matches_single_device(tmp_path_factory):
  """All terms on (+ OHEM, EMA teacher, multi-scale teacher): two steps on 8 devices == on 1 device.

  Each step starts from the same state on both (the second from the single-device first step, carrying the EMA
  teacher and prototypes): in this tiny BN-heavy model the float32 reduction order alone moves a step's update by
  percent (as it moves the reference's own, docs/parity_unimatch.md), which a chained second step would amplify
  into its losses (measured up to 13%), while the step itself agrees to 1e-6."""
  task1, _, _ = compiled("all", 1, str(tmp_path_factory.getbasetemp() / "all1"), ALL_OVERRIDES)
  batches = [next(task1.train_iter) for _ in range(2)]
  first, m0, _ = run_step("all", tmp_path_factory, devices=1, overrides=ALL_OVERRIDES, batch=batches[0], seed=0)
  results = {}
  for n in (1, 8):
    history = [m0] if n == 1 else [run_step("all", tmp_path_factory, devices=n, overrides=ALL_OVERRIDES,
                                            batch=batches[0], seed=0)[1]]
    state, m, _ = run_step("all", tmp_path_factory, devices=n, overrides=ALL_OVERRIDES, state=first,
                           batch=batches[1], seed=1)
    results[n] = (history + [m], state)
  for m1, m8 in zip(results[1][0], results[8][0]):
    assert set(m1) == set(m8) == EXPECTED_KEYS["all"]
    for k in m1:
      assert m8[k] == pytest.approx(m1[k], rel=2e-4, abs=1e-6), k
  np.testing.assert_allclose(results[8][1]["extra"]["prototypes"], results[1][1]["extra"]["prototypes"],
                             rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------ data streams

def test_zipped_iterator_resumes_exactly(tmp_path):
  config = tiny_config("unimatch")
  labeled, unlabeled, _ = semi_streams.load_semi_sources(config, str(tmp_path))
  assert (len(labeled), len(unlabeled)) == (8, 32)
  it = semi_streams.train_stream(config, labeled, unlabeled)
  first = next(it)
  # The unlabeled truth travels only for the diagnostics (semi.diagnostics, on by default), read by no loss.
  assert set(first) == {"image", "label", "u_image", "u_image_s1", "u_image_s2", "u_cutmix_box1",
                        "u_cutmix_box2", "u_ignore_mask", "u_truth"}
  assert "u_truth" not in next(semi_streams.train_stream(config, labeled, unlabeled, keep_truth=False))
  for _ in range(4):  # past one labeled epoch (8 images) and one unlabeled epoch (32 images)
    next(it)
  state = it.get_state()
  assert isinstance(state, bytes) and set(json.loads(state)) == {"", "u_"}
  expected = [next(it) for _ in range(3)]

  # Through the checkpoint manager (grain's handler: bytes state, set_state then start_prefetch).
  ck = checkpointing.Checkpointer(str(tmp_path / "ckpt"), best_metric=None)
  resumed = semi_streams.train_stream(config, labeled, unlabeled)
  resumed.set_state(state)
  ck.save(5, {"x": jnp.zeros(())}, resumed)
  fresh = semi_streams.train_stream(config, labeled, unlabeled)
  ck.restore(checkpointing.abstract_like({"x": jnp.zeros(())}), fresh)
  ck.close()
  got = [next(fresh) for _ in range(3)]
  for e, g in zip(expected, got):
    assert set(e) == set(g)
    for k in e:
      np.testing.assert_array_equal(e[k], g[k])
  assert not np.array_equal(expected[0]["u_image"], first["u_image"])
  with pytest.raises(DataError, match="streams"):
    semi_streams.pipeline.ZippedIterator({"": iter([])}).set_state(state)


def _voc_config(root, **semi):
  c = tiny_config("unimatch")
  c.unlock()
  c.data.name, c.data.root, c.data.num_classes = "voc", str(root), 21
  c.data.train_split, c.data.val_split = "train", "val"
  for k, v in semi.items():
    c.semi[k] = v
  c.lock()
  return c


def test_generated_splits_are_written_once_to_the_workdir(tmp_path):
  fx = fixtures.make_voc_fixture(tmp_path / "voc", n=12, val=2)
  config = _voc_config(fx["root"], labeled_fraction=0.25)
  lab, unl = semi_streams.resolve_splits(config, str(tmp_path / "work"))
  assert lab.startswith(str(tmp_path / "work" / "splits"))
  rows = {p: open(p).read().split("\n")[:-1] for p in (lab, unl)}
  assert len(rows[lab]) == round(0.25 * 10) and len(rows[unl]) == 10 - len(rows[lab])
  names = {os.path.basename(r.split()[0])[:-4] for r in rows[lab] + rows[unl]}
  assert names == set(fx["train"]) and not set(rows[lab]) & set(rows[unl])
  mtime = os.path.getmtime(lab)
  assert semi_streams.resolve_splits(config, str(tmp_path / "work")) == (lab, unl)
  assert os.path.getmtime(lab) == mtime  # present: not rewritten
  labeled, unlabeled, val = semi_streams.load_semi_sources(config, str(tmp_path / "work"))
  assert (len(labeled), len(unlabeled), len(val)) == (len(rows[lab]), len(rows[unl]), 2)
  other, _ = semi_streams.resolve_splits(_voc_config(fx["root"], labeled_fraction=0.25, split_seed=1),
                                         str(tmp_path / "work"))
  assert other != lab


def test_generated_splits_partition_the_fit_part_only(tmp_path):
  fx = fixtures.make_voc_fixture(tmp_path / "voc", n=12, val=2)
  config = _voc_config(fx["root"], labeled_fraction=0.25)
  config.unlock()
  config.data.train_split, config.data.val_split = "train@fit", "train@dev"
  config.lock()
  lab, unl = semi_streams.resolve_splits(config, str(tmp_path / "work"))
  names = [os.path.basename(r.split()[0])[:-4] for p in (lab, unl) for r in open(p).read().split("\n")[:-1]]
  labeled, _, dev = semi_streams.load_semi_sources(config, str(tmp_path / "work"))
  dev_ids = {dev.id_of(i) for i in range(len(dev))}
  assert len(names) == len(set(names)) == 10 - len(dev_ids) and not set(names) & dev_ids
  assert set(names) | dev_ids == set(fx["train"]) and len(labeled) == round(0.25 * len(names))


def test_unimatch_split_layout_under_the_root(tmp_path):
  fx = fixtures.make_voc_fixture(tmp_path / "voc", n=8, val=2)
  folder = tmp_path / "voc" / "splits" / "voc" / "2"
  folder.mkdir(parents=True)
  lines = [f"JPEGImages/{n}.jpg SegmentationClass/{n}.png\n" for n in fx["train"]]
  (folder / "labeled.txt").write_text("".join(lines[:2]))
  (folder / "unlabeled.txt").write_text("".join(lines[2:]))
  config = _voc_config(fx["root"])
  config.unlock()
  config.data.train_split = "splits/voc/2/labeled.txt"
  config.semi.unlabeled_split = "splits/voc/2/unlabeled.txt"
  config.lock()
  labeled, unlabeled, _ = semi_streams.load_semi_sources(config, str(tmp_path / "work"))
  assert [labeled.id_of(i) for i in range(len(labeled))] == fx["train"][:2]
  assert [unlabeled.id_of(i) for i in range(len(unlabeled))] == fx["train"][2:]
  np.testing.assert_array_equal(labeled[1]["label"], fx["labels"][fx["train"][1]])


def test_config_errors_name_the_fix(tmp_path):
  with pytest.raises(ConfigError, match="slices"):
    semi_streams.resolve_splits(tiny_config("unimatch", **{"semi.labeled_fraction": 0.5}), str(tmp_path))
  with pytest.raises(ConfigError, match="mask_ratio"):
    semi_terms.Terms.from_config(tiny_config("maskmatch", **{"semi.mask_ratio": 1.0}))
  with pytest.raises(ConfigError, match="encode/decode/classify"):
    semi_supervised.build(tiny_config("unimatch", **{"model.name": "fcn"}), sharding.make_mesh(1), str(tmp_path))


# ------------------------------------------------------------------------------------------ end to end

def test_train_preempt_resume_and_evaluate(tmp_path, tmp_path_factory, capsys):
  """train.run on 8 devices with every term on: stop at step 2 (as a preemption), resume in a fresh task (fresh
  state and data iterator, restored from the checkpoint) to step 4, evaluate."""
  workdir = str(tmp_path / "w")
  over = dict(ALL_OVERRIDES)
  # The step function is pure and identical for every build of this config; sharing it shares the compilation
  # with the sharding test (jax caches by function), so this test only pays for running.
  shared, _, _ = compiled("all", 8, str(tmp_path_factory.getbasetemp() / "all8"), ALL_OVERRIDES)
  mesh = sharding.make_mesh()

  def fresh_task(config):
    task = semi_supervised.build(config, mesh, workdir)
    task.train_step = shared.train_step
    return task

  first = tiny_config("all", **over, **{"train.stop_at": 2})
  assert train.run(first, workdir, task=fresh_task(first)) == {}
  config = tiny_config("all", **over)
  result = train.run(config, workdir, task=fresh_task(config))
  assert "resumed from" in capsys.readouterr().out
  assert 0.0 <= result["val/miou"] <= 1.0
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train_rows] == [2, 4]
  for r in train_rows:
    assert EXPECTED_KEYS["all"] <= set(r) and all(np.isfinite(r[k]) for k in EXPECTED_KEYS["all"])
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ck.latest_step() == 4
  state = ck.read_state(4)
  ck.close()
  protos = np.asarray(state["extra"]["prototypes"])
  assert protos.shape == (6, 32) and np.all(np.isfinite(protos)) and np.abs(protos).sum() > 0
  assert int(state["step"]) == 4 and "teacher" in state["extra"]
