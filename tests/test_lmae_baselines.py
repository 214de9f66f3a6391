"""L-MAE against its obvious alternatives: non-learned fills, margins from the same matrices, this project's
extensions (nearest prior, refinement head) in the graph, and a train loss that is exactly the paper's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from maskseg_jax import config_base, metrics, sharding
from maskseg_jax.errors import ConfigError
from maskseg_jax.losses import segmentation as seg_losses
from maskseg_jax.methods import get_method
from maskseg_jax.methods.lmae import evaluator as lmae_eval
from maskseg_jax.methods.lmae import extensions as ext
from maskseg_jax.methods.lmae import fills
from maskseg_jax.methods.lmae import inference as inf
from maskseg_jax.methods.lmae import model as lmae
from maskseg_jax.methods.lmae import patch_masks as P

N = 6


def tiny_config(**overrides):
  base = {"data.synthetic.num_train": 16, "data.synthetic.num_val": 8, "data.synthetic.image_size": (32, 32),
          "data.crop_size": (32, 32), "data.batch_size": 8, "data.eval_batch_size": 8,
          "model.image_size": (32, 32), "model.patch_size": 8, "model.enc_dim": 32, "model.dec_dim": 32,
          "train.steps": 2, "train.num_images": 1}
  return config_base.load_config("lmae", "synthetic", {**base, **overrides})


# --- fills -------------------------------------------------------------------------------------------------
def test_nearest_and_geodesic_by_hand():
  label = np.zeros((6, 8), np.int64)
  label[:, 4:] = 1
  image = np.zeros((6, 8, 3), np.uint8)
  image[:, 4:] = 255                       # the class boundary is an image edge
  known = np.ones((6, 8), bool)
  known[:, 2:7] = False                    # hole from column 2 to 6; nearest splits it at 4.5, the image at 4
  near = fills.nearest_fill(label, known, image)
  geo = fills.geodesic_fill(label, known, image)
  np.testing.assert_array_equal(near[0], [0, 0, 0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(geo[0], [0, 0, 0, 0, 1, 1, 1, 1])
  assert (geo == label).all() and not (near == label).all()


@pytest.mark.parametrize("name", sorted(fills.FILLS))
def test_fills_never_read_a_masked_label(name):
  rng = np.random.default_rng(0)
  label = rng.integers(0, N, (2, 16, 16))
  image = rng.integers(0, 255, (2, 16, 16, 3)).astype(np.uint8)
  mask = np.zeros((2, 16, 16), bool)
  mask[:, 4:12, 2:10] = True
  valid = np.ones(2, bool)
  _, _, composed = lmae_eval.fill_confusions(name, label, mask, image, valid, N, 255)
  scrambled = np.where(mask, (label + 1 + rng.integers(0, N - 1, label.shape)) % N, label)
  _, _, again = lmae_eval.fill_confusions(name, scrambled, mask, image, valid, N, 255)
  np.testing.assert_array_equal(composed[mask], again[mask])   # the fill is blind to what it fills
  np.testing.assert_array_equal(composed[~mask], label[~mask])  # and keeps every visible pixel


def test_jump_flood_prior_equals_exact_nearest_distance():
  rng = np.random.default_rng(1)
  h, w = 24, 40
  ids = np.arange(h * w).reshape(1, h, w)   # each pixel its own "class": the output names the chosen seed
  for density in (0.02, 0.5):
    known = rng.random((1, h, w)) < density
    seed = np.asarray(ext.nearest_visible_label(jnp.asarray(ids), jnp.asarray(known)))[0]
    yy, xx = np.mgrid[:h, :w]
    chosen = np.hypot(seed // w - yy, seed % w - xx)
    np.testing.assert_allclose(chosen, ndimage.distance_transform_edt(~known[0]), atol=1e-9)
  nothing = ext.nearest_visible_label(jnp.asarray(ids), jnp.zeros((1, h, w), bool))
  assert (np.asarray(nothing) == -1).all()


def test_geodesic_prior_equals_the_geodesic_fill():
  """The in-graph prior (Bellman-Ford on the normalized image) picks the fill's seed label: two colour regions
  whose edge is not where the nearest visible pixel would split the hole."""
  rng = np.random.default_rng(2)
  h, w = 16, 24
  label = np.where(np.arange(w)[None, :] < 9 + np.arange(h)[:, None] // 4, 0, 1) * np.ones((h, 1), np.int64)
  label[:, 18:] = 2
  raw = (np.stack([label * 90, 200 - label * 60, 40 + label * 50], -1) + rng.integers(0, 12, (h, w, 3))).astype(np.uint8)
  known = np.ones((h, w), bool)
  known[2:14, 4:22] = False
  known[6:8, 10:12] = True                 # an island of class 1 inside the hole
  want = fills.geodesic_fill(label, known, raw)
  image = (raw / 255.0 - np.asarray(config_base.IMAGENET_MEAN)) / np.asarray(config_base.IMAGENET_STD)
  got, _, _ = ext.geodesic_visible_seed(jnp.asarray(label[None]), jnp.asarray(known[None]),
                                        jnp.asarray(image[None], jnp.float32))
  got = np.asarray(got)[0]
  np.testing.assert_array_equal(got, want)
  assert (got == label).mean() > (fills.nearest_fill(label, known, raw) == label).mean()  # image-aware


# --- the evaluator -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  config = tiny_config()
  mesh = sharding.make_mesh(1)
  task = get_method("lmae").build(config, mesh, str(tmp_path_factory.mktemp("run")))
  state = sharding.replicate(task.state, mesh)
  return task, state, {ev.name: ev.run(state) for ev in task.evaluators}


def test_baselines_reported_beside_the_model_with_margins(evaluated):
  _, _, results = evaluated
  for name in ("val", "val_random"):
    s = results[name].scalars
    for fill in fills.FILLS:
      assert {f"{name}/{fill}/pa_miou", f"{name}/{fill}/miou"} <= set(s)
      assert any(k.startswith(f"{name}/{fill}/pa_iou/") for k in s)
    for key in ("pa_miou", "miou"):
      best = max(s[f"{name}/{fill}/{key}"] for fill in fills.FILLS)
      assert s[f"{name}/margin_{key}"] == pytest.approx(s[f"{name}/{key}"] - best, abs=1e-12)
    # An untrained model is far worse than a fill on these scenes: the margin says so.
    assert s[f"{name}/margin_pa_miou"] < -0.2


def test_baseline_scores_come_from_the_evaluators_own_masks(evaluated):
  """Recompute the nearest fill from scratch on the evaluator's masks: the same PA matrix, hence the same score."""
  task, state, results = evaluated
  ev = task.evaluators[0]
  confs, _ = ev.confusions(state)
  expected = np.zeros((N, N), np.int64)
  for i, batch in enumerate(ev._batches()):
    label = jnp.asarray(batch["label"])
    _, _, mask = inf.strategy_mask(label, jax.random.fold_in(jax.random.PRNGKey(0), i), strategy=ev.strategy,
                                   k=8, p=8, background_classes=(0,))
    mask_px = np.asarray(inf.patch_pixels(mask, 8, 32, 32))
    lab = np.asarray(batch["label"], np.int64)
    for j in np.flatnonzero(batch["valid"]):
      known = ~mask_px[j] & (lab[j] < N)
      _, (r, c) = ndimage.distance_transform_edt(~known, return_indices=True)
      filled = lab[j][r, c]
      region = mask_px[j] & (lab[j] < N)
      np.add.at(expected, (lab[j][region], filled[region]), 1)
  np.testing.assert_array_equal(confs["nearest"][0], expected)
  assert results["val"].scalars["val/nearest/pa_miou"] == pytest.approx(
      metrics.summarize(expected, "x")["x/miou"], abs=1e-12)


def test_completion_picture_has_baseline_columns_and_legend(evaluated):
  _, _, results = evaluated
  picture = results["val"].images["val/completions"]
  assert picture.shape[1] >= 6 * 32          # image, given, model, nearest, geodesic, truth
  assert picture.shape[0] > 32 + 12          # titles above, legend below the one row


# --- extensions --------------------------------------------------------------------------------------------
def _model(**kw):
  return lmae.LMAE(num_classes=N, image_size=(32, 32), patch_size=8, **lmae.LMAE_SIZES["tiny"],
                   rngs=nnx.Rngs(params=0, dropout=1), **kw)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  image = jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)
  label = jnp.asarray(rng.integers(0, N, (2, 32, 32)))
  ids_keep, ids_masked, mask = P.mask_from_scores(jax.random.uniform(jax.random.PRNGKey(seed), (2, 16)), 8)
  return image, label, ids_keep, ids_masked, np.asarray(inf.patch_pixels(mask, 8, 32, 32))


@pytest.mark.parametrize("kw", [dict(prior="nearest"), dict(refine_width=4), dict(prior="nearest", refine_width=4),
                                dict(prior="geodesic", refine_width=4), dict(prior="nearest", prior_skip=True)])
def test_extensions_keep_masked_labels_hidden(kw):
  model = _model(**kw)
  image, label, keep, masked, mask_px = _inputs()
  out = model(image, label, keep, masked, train=False)
  other = jnp.where(mask_px, (label + 1) % N, label)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(model(image, other, keep, masked, train=False)))


def test_prior_reaches_the_masked_tokens():
  """Changing only the visible labels next to a masked patch changes its logits through the prior."""
  plain, with_prior = _model(), _model(prior="nearest")
  assert with_prior.ips_embed.kernel.shape[0] == (3 + N) * 64 and plain.ips_embed.kernel.shape[0] == 3 * 64
  image, label, keep, masked, mask_px = _inputs()
  # Zero the weights the image and visible tokens use: the masked logits then depend on the prior only.
  k = with_prior.ips_embed.kernel[...]
  with_prior.ips_embed.kernel[...] = k.at[:3 * 64].set(0.0)
  a = with_prior(image, label, keep, masked, train=False)
  b = with_prior(image, jnp.where(mask_px, label, (label + 2) % N), keep, masked, train=False)
  assert float(jnp.abs(a - b)[jnp.asarray(mask_px)].max()) > 1e-4


def test_pixel_context_reads_given_pixels_in_masked_patches_and_nothing_else():
  """lmae.pixel_context: a given pixel inside a masked patch seeds the prior (its label changes the logits);
  the missing pixels there stay hidden; no given pixel in a masked patch is the model without it."""
  model = _model(prior="geodesic", refine_width=4)
  model.refine.out.kernel[...] = 0.1 * jnp.ones_like(model.refine.out.kernel[...])
  image, label, keep, masked, mask_px = _inputs()
  run = lambda lab, given, **kw: np.asarray(inf.completion_logits(model, image, lab, keep, masked, given_px=given,
                                                                  fill_blend=0.3, mirror=True, **kw))
  np.testing.assert_array_equal(run(label, jnp.zeros_like(label, bool)), run(label, None))
  given = jnp.asarray(mask_px & (np.arange(32)[None, None, :] % 8 == 0))  # a column of each masked patch
  hidden = jnp.where(jnp.asarray(mask_px) & ~given, (label + 1) % N, label)
  np.testing.assert_array_equal(run(hidden, given, reveal=(0.5,)), run(label, given, reveal=(0.5,)))
  moved = jnp.where(given, (label + 2) % N, label)
  assert float(np.abs(run(moved, given) - run(label, given)).max()) > 1e-4
  assert float(np.abs(run(label, given) - run(label, None)).max()) > 1e-4


def test_refine_head_starts_as_identity_and_then_trains():
  model = _model(prior="nearest", refine_width=4)
  image, label, keep, masked, _ = _inputs()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    return jnp.mean(nnx.merge(graphdef, p, rest)(image, label, keep, masked, train=True) ** 2)

  grads = jax.grad(loss)(params)
  out_grad = grads["refine"]["out"]["kernel"][...]
  assert float(jnp.abs(out_grad).max()) > 0.0                   # it is in the graph
  # Zero-initialised output: the head adds nothing until trained.
  assert float(jnp.abs(model.refine.out.kernel[...]).max()) == 0.0
  model.refine.out.kernel[...] = jnp.ones_like(model.refine.out.kernel[...])
  changed = model(image, label, keep, masked, train=False)
  model.refine.out.kernel[...] = jnp.zeros_like(model.refine.out.kernel[...])
  assert float(jnp.abs(changed - model(image, label, keep, masked, train=False)).max()) > 1e-3


def test_prior_skip_adds_its_weight_at_the_prior_class_by_seed_distance():
  model = _model(prior="nearest", refine_width=4, prior_skip=True)
  image, label, keep, masked, mask_px = _inputs()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  grads = jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p, rest)(image, label, keep, masked, train=True) ** 2))(params)
  assert float(jnp.abs(grads["prior_skip"]["weight"][...]).max()) > 0.0      # it is in the graph and trains
  before = model(image, label, keep, masked, train=False)
  plain = _model(prior="nearest", refine_width=4)                             # zero-init: the model without it
  np.testing.assert_allclose(np.asarray(before), np.asarray(plain(image, label, keep, masked, train=False)), atol=1e-6)
  weight = jnp.arange(1.0, 1.0 + model.prior_skip.weight[...].size).reshape(model.prior_skip.weight[...].shape)
  model.prior_skip.weight[...] = weight
  added = np.asarray(model(image, label, keep, masked, train=False) - before)
  prior, cues = ext.prior_features(image, label, ~jnp.asarray(mask_px), N, "nearest")
  bucket = np.searchsorted(ext.SKIP_DISTANCE_EDGES, np.asarray(cues[..., 0]) * ext.SEED_DISTANCE_UNIT, side="right")
  cls = np.asarray(prior).argmax(-1)
  expected = np.asarray(prior) * np.asarray(weight)[bucket, cls][..., None]
  np.testing.assert_allclose(added, expected, atol=1e-4)
  assert len(np.unique(bucket[mask_px])) > 2                                  # several distance buckets were used
  with pytest.raises(ConfigError, match="prior_skip needs a model.prior"):
    _model(prior_skip=True)


def test_lovasz_softmax_is_the_jaccard_loss_at_one_hot_predictions():
  rng = np.random.default_rng(4)
  label = rng.integers(0, N, (2, 12, 10))
  label[0, :2] = 255
  pred = np.where(rng.random(label.shape) < 0.6, label % N, rng.integers(0, N, label.shape))
  region = rng.random(label.shape) < 0.7
  logits = 60.0 * jax.nn.one_hot(jnp.asarray(pred), N)
  got = float(seg_losses.lovasz_softmax(logits, jnp.asarray(label), region=jnp.asarray(region)))
  counted = region & (label != 255)
  losses = [1 - ((pred == c) & (label == c) & counted).sum() / (((pred == c) | (label == c)) & counted).sum()
            for c in range(N) if ((label == c) & counted).any()]
  assert got == pytest.approx(float(np.mean(losses)), abs=1e-5)
  # Soft predictions: differentiable, and a step against the gradient lowers it.
  soft = jnp.asarray(rng.normal(size=label.shape + (N,)), jnp.float32)
  loss = lambda z: seg_losses.lovasz_softmax(z, jnp.asarray(label), region=jnp.asarray(region))
  g = jax.grad(loss)(soft)
  assert float(jnp.abs(g).max()) > 0 and float(loss(soft - 5.0 * g)) < float(loss(soft))
  assert float(jnp.abs(g[jnp.asarray(~counted)]).max()) == 0.0  # uncounted pixels get no gradient


def test_lovasz_sort_order_matches_the_float_argsort_and_falls_back_when_keys_run_out(monkeypatch):
  rng = np.random.default_rng(5)
  err = rng.permutation(np.linspace(0.0, 1.0, 700)).astype(np.float32)
  err[::7] = err[3]  # exact ties sort by index, as a stable argsort does
  want = np.argsort(-err, kind="stable")
  np.testing.assert_array_equal(np.asarray(seg_losses.descending_order(jnp.asarray(err))), want)
  monkeypatch.setattr(seg_losses, "MIN_PACKED_ERROR_BITS", 31)  # no room for a packed key: the exact argsort
  np.testing.assert_array_equal(np.asarray(seg_losses.descending_order(jnp.asarray(err))), want)


def test_lovasz_on_the_gathered_masked_patches_equals_lovasz_over_the_masked_region():
  """The train step sorts only the masked patches' pixels; the loss and its gradient are the region's."""
  rng = np.random.default_rng(6)
  label = rng.integers(0, N, (2, 16, 24))
  label[0, :3] = 255
  logits = jnp.asarray(rng.normal(size=label.shape + (N,)), jnp.float32)
  _, ids_masked, _ = P.mask_from_scores(jnp.asarray(rng.random((2, 6))), 3)
  region = P.masked_pixels(ids_masked, 8, 16, 24)
  full = lambda z: seg_losses.lovasz_softmax(z, jnp.asarray(label), region=region)
  gathered = lambda z: seg_losses.lovasz_softmax(P.patch_pixel_values(z, ids_masked, 8),
                                                 P.patch_pixel_values(jnp.asarray(label)[..., None], ids_masked, 8)[:, 0])
  assert float(gathered(logits)) == pytest.approx(float(full(logits)), abs=1e-6)
  np.testing.assert_allclose(np.asarray(jax.grad(gathered)(logits)), np.asarray(jax.grad(full)(logits)), atol=1e-6)
  assert float(jnp.abs(jax.grad(full)(logits)[~region]).max()) == 0.0 < float(jnp.abs(jax.grad(full)(logits)).max())


def test_mirror_average_is_flip_equivariant():
  """Mirror averaging makes the completion exactly left-right equivariant; the plain model is not."""
  model = _model(prior="geodesic", refine_width=4)
  model.refine.out.kernel[...] = 0.1 * jnp.ones_like(model.refine.out.kernel[...])
  image, label, keep, masked, mask_px = _inputs()
  grid_w = 32 // 8
  m_keep, m_masked = inf.mirrored_patch_ids(keep, grid_w), inf.mirrored_patch_ids(masked, grid_w)
  mask = jnp.zeros((2, 16), bool).at[jnp.arange(2)[:, None], m_masked].set(True)
  np.testing.assert_array_equal(np.asarray(inf.patch_pixels(mask, 8, 32, 32)), mask_px[:, :, ::-1])
  flip = lambda x: x[:, :, ::-1]
  for mirror, equivariant in ((True, True), (False, False)):
    a = inf.completion_logits(model, image, label, keep, masked, mirror=mirror)
    b = inf.completion_logits(model, flip(image), flip(label), m_keep, m_masked, mirror=mirror)
    gap = float(jnp.abs(flip(a) - b).max())
    assert (gap < 1e-4) == equivariant, (mirror, gap)


def test_progressive_reveal_completes_the_unsure_patches_again_from_the_sure_ones():
  """reveal=(0.5,): the 4 of 8 masked patches the first pass is surest of keep its logits and join the visible
  ones with their predicted labels; the others get a second pass's logits; no masked label is ever read."""
  model = _model(prior="nearest", refine_width=4)
  model.refine.out.kernel[...] = 0.3 * jnp.ones_like(model.refine.out.kernel[...])
  image, label, keep, masked, mask_px = _inputs()
  first = inf.completion_logits(model, image, label, keep, masked)
  got = inf.completion_logits(model, image, label, keep, masked, reveal=(0.5,))
  hidden_changed = jnp.where(mask_px, (label + 1) % N, label)
  np.testing.assert_array_equal(np.asarray(inf.completion_logits(model, image, hidden_changed, keep, masked,
                                                                 reveal=(0.5,))), np.asarray(got))
  top = np.asarray(jax.nn.softmax(first, -1)).max(-1)  # [2,32,32]
  per_patch = top.reshape(2, 4, 8, 4, 8).mean((2, 4)).reshape(2, 16)
  masked_np = np.asarray(masked)
  order = np.argsort(-np.take_along_axis(per_patch, masked_np, 1), axis=1, kind="stable")
  revealed, still = np.take_along_axis(masked_np, order[:, :4], 1), np.take_along_axis(masked_np, order[:, 4:], 1)
  revealed_px = np.asarray(P.masked_pixels(jnp.asarray(revealed), 8, 32, 32))
  still_px = np.asarray(P.masked_pixels(jnp.asarray(still), 8, 32, 32))
  guessed = np.where(revealed_px, np.asarray(first).argmax(-1), np.asarray(label))
  second = model(image, jnp.asarray(guessed), jnp.concatenate([keep, jnp.asarray(revealed)], 1), jnp.asarray(still),
                 train=False)
  np.testing.assert_allclose(np.asarray(got)[revealed_px], np.asarray(first)[revealed_px], atol=1e-6)
  np.testing.assert_allclose(np.asarray(got)[still_px], np.asarray(second)[still_px], atol=1e-5)
  assert float(np.abs(np.asarray(got) - np.asarray(first))[still_px].max()) > 1e-3  # the second pass changed them
  for bad in ((0.5, 0.5), (1.0,), (0.0, 0.5)):
    with pytest.raises(ConfigError, match="progressive_reveal"):
      inf.check_reveal(bad)


def test_build_lmae_reads_the_extension_flags():
  c = tiny_config(**{"model.prior": "nearest", "model.refine_width": 4})
  model = lmae.build_lmae(c.model, N, nnx.Rngs(0))
  assert model.prior == "nearest" and model.refine is not None
  assert lmae.build_lmae(tiny_config().model, N, nnx.Rngs(0)).refine is None


# --- the train loss is the paper's: masked pixels only, the drawn strategy, the class weights ------------------
@pytest.mark.parametrize("probs,lovasz", [((0, 0, 1), 0.0), ((0, 1, 0), 0.7)])
def test_train_loss_equals_weighted_ce_on_masked_pixels_of_the_drawn_strategy(tmp_path, probs, lovasz):
  config = tiny_config(**{"lmae.strategy_probs": probs, "optim.lr": 0.0, "lmae.lovasz_weight": lovasz})
  mesh = sharding.make_mesh(1)
  task = get_method("lmae").build(config, mesh, str(tmp_path))
  weights = jnp.linspace(0.2, 2.0, N)       # far from uniform: ignoring them changes the loss
  state = dict(task.state, extra={"class_weights": weights})
  batch = next(task.train_iter)
  rng = jax.random.PRNGKey(3)
  _, metrics_ = jax.jit(task.train_step)(state, {k: jnp.asarray(v) for k, v in batch.items()}, rng)

  # By hand: the strategy's own scores on the label, K visible patches, CE weighted per pixel on masked pixels.
  label = jnp.asarray(batch["label"])
  k_mask, _ = jax.random.split(rng)
  noise = jax.random.split(k_mask)[1]
  strategy = P.STRATEGY_ORDER[int(np.argmax(probs))]
  b = P.background_proportion(label, 8, (0,))
  keep, masked, mask = P.mask_from_scores(P.MASK_STRATEGIES[strategy](noise, b), 8)
  mdef = get_method("lmae").init_state(config, N)[0]
  model = mdef.merge(state["params"], state["batch_stats"])
  logits = model(jnp.asarray(batch["image"]), label, keep, masked, train=True)
  logp = jax.nn.log_softmax(logits, -1)
  region = np.asarray(inf.patch_pixels(mask, 8, 32, 32)) & (np.asarray(label) != 255)
  lab = np.where(region, np.asarray(label), 0)
  ce = -np.take_along_axis(np.asarray(logp), lab[..., None], -1)[..., 0]
  w = np.asarray(weights)[lab]
  expected = float((ce * w * region).sum() / (w * region).sum())
  lovasz_term = float(seg_losses.lovasz_softmax(logits, label, region=jnp.asarray(region)))
  assert lovasz_term > 0.1
  assert float(metrics_["loss"]) == pytest.approx(expected + lovasz * lovasz_term, rel=1e-5)
  # And it is not the all-pixel loss (so the test tells the two apart).
  everywhere = np.asarray(label) != 255
  lab_all = np.where(everywhere, np.asarray(label), 0)
  ce_all = -np.take_along_axis(np.asarray(logp), lab_all[..., None], -1)[..., 0]
  w_all = np.asarray(weights)[lab_all]
  assert abs(float((ce_all * w_all * everywhere).sum() / (w_all * everywhere).sum()) - expected) > 1e-4


def test_train_mask_ratios_mask_each_batch_slice_at_its_own_ratio(tmp_path):
  """Two training ratios: the first half of the batch keeps 12 of 16 patches, the second 4; the loss is the CE
  pooled over both halves' masked pixels (by hand), not the loss at lmae.mask_ratio."""
  config = tiny_config(**{"lmae.strategy_probs": (1, 0, 0), "optim.lr": 0.0, "lmae.train_mask_ratios": (0.25, 0.75)})
  task = get_method("lmae").build(config, sharding.make_mesh(1), str(tmp_path))
  weights = jnp.linspace(0.2, 2.0, N)
  state = dict(task.state, extra={"class_weights": weights})
  batch = {k: jnp.asarray(v) for k, v in next(task.train_iter).items()}
  rng = jax.random.PRNGKey(5)
  _, metrics_ = jax.jit(task.train_step)(state, batch, rng)
  model = get_method("lmae").init_state(config, N)[0].merge(state["params"], state["batch_stats"])
  k_mask = jax.random.split(rng)[0]
  half = batch["label"].shape[0] // 2
  total = count = 0.0
  for i, (sl, k) in enumerate(((slice(0, half), 12), (slice(half, None), 4))):
    label = batch["label"][sl]
    noise = jax.random.split(jax.random.fold_in(k_mask, i))[1]
    keep, masked, mask = P.mask_from_scores(P.MASK_STRATEGIES["random"](noise, P.background_proportion(label, 8, (0,))), k)
    assert keep.shape[1] == k
    logp = np.asarray(jax.nn.log_softmax(model(batch["image"][sl], label, keep, masked, train=True), -1))
    region = np.asarray(inf.patch_pixels(mask, 8, 32, 32)) & (np.asarray(label) != 255)
    lab = np.where(region, np.asarray(label), 0)
    w = np.asarray(weights)[lab] * region
    total += float((-np.take_along_axis(logp, lab[..., None], -1)[..., 0] * w).sum())
    count += float(w.sum())
  assert float(metrics_["loss"]) == pytest.approx(total / count, rel=1e-5)
  single = tiny_config(**{"lmae.strategy_probs": (1, 0, 0), "optim.lr": 0.0})
  task1 = get_method("lmae").build(single, sharding.make_mesh(1), str(tmp_path / "one"))
  _, one = jax.jit(task1.train_step)(dict(task1.state, extra={"class_weights": weights}), batch, rng)
  assert abs(float(one["loss"]) - total / count) > 1e-4
  with pytest.raises(ConfigError, match="train_mask_ratios holds 1"):
    from maskseg_jax.methods.lmae.task import train_ratios
    train_ratios(tiny_config(**{"lmae.train_mask_ratios": (0.5, 1.0)}).lmae)


def test_fill_blend_hands_the_unsure_pixels_to_the_geodesic_fill():
  """a = 0 is the model; a = 1 is the geodesic fill of the visible labels (hidden labels cannot change it); in
  between, the fill's class wins exactly where the model's top class leads it by less than a / (1 - a)."""
  model = _model(refine_width=4)
  model.refine.out.kernel[...] = 0.3 * jnp.ones_like(model.refine.out.kernel[...])
  image, label, keep, masked, mask_px = _inputs()
  plain = inf.completion_logits(model, image, label, keep, masked)
  np.testing.assert_array_equal(np.asarray(inf.completion_logits(model, image, label, keep, masked, fill_blend=0.0)),
                                np.asarray(plain))
  known = ~mask_px & (np.asarray(label) < N)
  geodesic, _, _ = ext.geodesic_visible_seed(label, jnp.asarray(known), image)
  hidden_changed = jnp.where(mask_px, (label + 1) % N, label)
  for lab in (label, hidden_changed):
    only_fill = inf.completion_logits(model, image, lab, keep, masked, fill_blend=1.0)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(only_fill, -1)), np.asarray(geodesic))
  a = 0.2
  probs = np.asarray(jax.nn.softmax(plain, -1))
  p_fill = np.take_along_axis(probs, np.asarray(geodesic)[..., None], -1)[..., 0]
  expect_fill = probs.max(-1) - p_fill < a / (1 - a)
  got = np.asarray(jnp.argmax(inf.completion_logits(model, image, label, keep, masked, fill_blend=a), -1))
  np.testing.assert_array_equal(got == np.asarray(geodesic), expect_fill | (probs.argmax(-1) == np.asarray(geodesic)))
  assert 0 < (expect_fill & (probs.argmax(-1) != np.asarray(geodesic))).sum()  # the blend changed some pixels
  # With a reach r the weight is a x exp(-d / r), d the pixel's distance to the seed its fill copies.
  _, sy, sx = ext.geodesic_visible_seed(label, jnp.asarray(known), image)
  ys, xs = np.meshgrid(np.arange(label.shape[1]), np.arange(label.shape[2]), indexing="ij")
  d = np.hypot(np.asarray(sy) - ys, np.asarray(sx) - xs)
  r, a_near = 3.0, 0.6
  a_px = a_near * np.exp(-d / r)
  expect_fill = probs.max(-1) - p_fill < a_px / (1 - a_px)
  got = np.asarray(jnp.argmax(inf.completion_logits(model, image, label, keep, masked, fill_blend=a_near,
                                                    fill_reach=r), -1))
  np.testing.assert_array_equal(got == np.asarray(geodesic), expect_fill | (probs.argmax(-1) == np.asarray(geodesic)))
  constant = np.asarray(jnp.argmax(inf.completion_logits(model, image, label, keep, masked, fill_blend=a_near), -1))
  assert (got != constant).any()  # the reach changed some pixels
