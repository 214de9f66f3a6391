"""Behaviour of the semi-supervised building blocks: strong views, consistency losses, S4MIM feature
aggregation and class-wise reconstruction, random patch masks and MaskMatch multi-scale ensembling."""

from __future__ import annotations

import math
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from maskseg_jax.data import strong_augment as sa
from maskseg_jax.losses import consistency as cons
from maskseg_jax.losses import feature as feat
from maskseg_jax.methods.semi_supervised.ensemble import multiscale_probs
from maskseg_jax.methods.semi_supervised.mim_heads import ClassWiseReconstruction, norm_pix_target, pixel_shuffle
from maskseg_jax.methods.semi_supervised.random_patches import apply_pixel_mask, num_masked_patches, random_patch_mask

N_DRAWS = 400


def _noise(h=16, w=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- strong views

def test_random_grayscale_rate_and_equal_channels():
  rng, img = np.random.default_rng(1), _noise()
  outs = [sa.random_grayscale(img, rng, p=0.2) for _ in range(N_DRAWS)]
  gray = [o for o in outs if (o[..., 0] == o[..., 1]).all() and (o[..., 1] == o[..., 2]).all()]
  assert abs(len(gray) / N_DRAWS - 0.2) < 0.07
  g = sa.grayscale(img)
  assert g.dtype == np.uint8 and (g[..., 0] == g[..., 1]).all() and (g[..., 0] == g[..., 2]).all()


def test_gaussian_blur_rate_and_smoothing():
  rng, img = np.random.default_rng(2), _noise()
  # sigma >= 1 so every applied blur visibly changes a noise image (sigma 0.1 is nearly the identity).
  outs = [sa.gaussian_blur(img, rng, sigma_range=(1.0, 2.0), p=0.5) for _ in range(N_DRAWS)]
  blurred = [o for o in outs if not np.array_equal(o, img)]
  assert abs(len(blurred) / N_DRAWS - 0.5) < 0.08
  b = sa.blur(img, 1.5)
  assert b.dtype == np.uint8 and b.shape == img.shape
  assert b.astype(float).std() < 0.6 * img.astype(float).std()
  const = np.full((9, 7, 3), 77, np.uint8)
  np.testing.assert_array_equal(sa.blur(const, 2.0), const)  # normalized kernel + edge padding


def test_cutmix_box_rate_area_and_aspect():
  rng, h, w = np.random.default_rng(3), 200, 300
  boxes = [sa.cutmix_box(rng, h, w, p=0.5) for _ in range(N_DRAWS)]
  applied = [b for b in boxes if b.any()]
  assert all(b.dtype == bool and b.shape == (h, w) for b in boxes)
  assert abs(len(applied) / N_DRAWS - 0.5) < 0.08
  tol = 1.06  # whole-pixel rounding of the box sides
  for b in applied:
    ys, xs = np.nonzero(b)
    bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert b.sum() == bh * bw  # one solid rectangle
    assert 0.02 / tol <= b.sum() / (h * w) <= 0.4 * tol
    assert 0.3 / tol <= bh / bw <= tol / 0.3


def test_color_jitter_range_and_factors():
  rng = np.random.default_rng(4)
  img = _noise(12, 10)
  for _ in range(20):
    out = sa.color_jitter(img, rng)
    assert out.dtype == np.uint8 and out.shape == img.shape
  const = np.full((4, 4, 3), 100, np.uint8)
  for _ in range(20):
    out = sa.color_jitter(const, rng, brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0)
    assert 49 <= out.mean() <= 151 and np.ptp(out) == 0
  gray = sa.grayscale(img)
  for _ in range(5):  # hue and saturation cannot colour a gray image
    out = sa.color_jitter(gray, rng, brightness=0.0, contrast=0.0, saturation=0.5, hue=0.5)
    np.testing.assert_allclose(out.astype(int), gray.astype(int), atol=1)
  # hue by half a turn swaps pure red for cyan
  red = np.zeros((2, 2, 3), np.uint8)
  red[..., 0] = 255
  np.testing.assert_allclose(sa._adjust_hue(red.astype(np.float32), 0.5)[0, 0], [0, 255, 255], atol=1e-3)


def test_unlabeled_transform_adds_views_boxes_and_ignore():
  data = ml_collections.ConfigDict(dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)))
  semi = ml_collections.ConfigDict(dict(cutmix_p=1.0, jitter_p=1.0))
  transform = sa.make_unlabeled_transform(data, semi)
  raw = _noise(20, 24)
  raw[15:] = 0
  label = np.zeros((20, 24), np.uint8)
  label[15:] = sa.UNLABELED_PAD
  weak = (raw.astype(np.float32) - np.float32(data.mean)) / np.float32(data.std)
  ex = transform({"raw_image": raw, "image": weak, "label": label}, np.random.default_rng(5))
  for k in ("image_s1", "image_s2"):
    assert ex[k].shape == (20, 24, 3) and ex[k].dtype == np.float32
    np.testing.assert_array_equal(ex[k][15:], weak[15:])  # padding is not augmented
  assert not np.array_equal(ex["image_s1"], ex["image_s2"])  # independent draws
  for k in ("cutmix_box1", "cutmix_box2"):
    assert ex[k].dtype == bool and ex[k].shape == (20, 24) and ex[k].any()
  np.testing.assert_array_equal(ex["ignore_mask"], label == 254)
  assert "raw_image" not in ex and ex["label"] is label  # raw crop dropped, label kept for diagnostics
  assert pickle.loads(pickle.dumps(transform))(  # grain workers receive it pickled
      {"raw_image": raw, "label": label}, np.random.default_rng(5))["image_s1"].shape == (20, 24, 3)
  assert sa.StrongAugConfig.from_config(semi).cutmix_p == 1.0
  assert sa.StrongAugConfig.from_config(None) == sa.StrongAugConfig()
  with pytest.raises(ValueError, match="raw_image"):
    transform({"image": weak, "label": label}, np.random.default_rng(0))


# --------------------------------------------------------------------------------------- consistency losses

def test_pseudo_labels_stop_gradient():
  logits = jnp.array([[[[2.0, 0.0, 1.0]]]])
  yhat, conf = cons.pseudo_labels(logits)
  assert int(yhat[0, 0, 0]) == 0
  np.testing.assert_allclose(conf[0, 0, 0], jax.nn.softmax(logits)[0, 0, 0, 0], rtol=1e-6)
  g = jax.grad(lambda z: jnp.sum(cons.pseudo_labels(z)[1]))(logits)
  assert not np.any(np.asarray(g))


def test_confident_ce_hand_case():
  l3 = math.log(3.0)
  logits = jnp.array([[[[0.0, 0.0], [l3, 0.0]], [[0.0, 0.0], [l3, 0.0]]]])  # [1,2,2,2]
  yhat = jnp.array([[[0, 1], [0, 0]]])
  conf = jnp.array([[[0.99, 0.5], [0.96, 0.97]]])
  ignore = jnp.array([[[False, False], [True, False]]])
  total, count = cons.confident_ce(logits, yhat, conf, ignore, tau=0.95)
  # counted: (0,0) CE = log 2; (1,1) CE = -log(3/4). (0,1) is unconfident, (1,0) ignored.
  np.testing.assert_allclose(total, math.log(2.0) + math.log(4.0 / 3.0), rtol=1e-6)
  assert float(count) == 3.0  # not-ignored pixels, confident or not
  s, n = cons.confident_fraction(conf, ignore, 0.95)
  assert (float(s), float(n)) == (2.0, 3.0)


def test_cutmix_uses_partner_inside_box():
  yhat = jnp.stack([jnp.zeros((4, 4), jnp.int32), jnp.ones((4, 4), jnp.int32)])
  conf = jnp.stack([jnp.full((4, 4), 0.1), jnp.full((4, 4), 0.9)])
  ignore = jnp.zeros((2, 4, 4), bool).at[1, 0, 0].set(True)
  box = jnp.zeros((2, 4, 4), bool).at[0, :2, :2].set(True)
  partner = cons.roll_partner(2)
  assert partner.tolist() == [1, 0]
  y, c, ig = cons.cutmix_targets(yhat, conf, ignore, box, partner)
  np.testing.assert_array_equal(y[0], np.where(np.asarray(box[0]), 1, 0))
  np.testing.assert_allclose(c[0], np.where(np.asarray(box[0]), 0.9, 0.1))
  assert bool(ig[0, 0, 0]) and int(ig.sum()) == 2  # partner's ignored pixel comes along; its own stays
  np.testing.assert_array_equal(y[1], yhat[1])  # no box -> unchanged
  images = jnp.stack([jnp.zeros((4, 4, 3)), jnp.ones((4, 4, 3))])
  mixed = cons.cutmix_mix(images, box, partner)
  np.testing.assert_array_equal(mixed[0, ..., 0], np.asarray(box[0], np.float32))


def _logits_for_probs(p):
  """2-class logits whose class-0 probability is p."""
  p = jnp.asarray(p, jnp.float32)
  return jnp.stack([jnp.log(p), jnp.log1p(-p)], -1)


def test_ohem_keeps_the_right_count():
  p = jnp.linspace(0.05, 0.95, 20).reshape(1, 4, 5)  # true-class probs, distinct
  logits = _logits_for_probs(p)
  labels = jnp.zeros((1, 4, 5), jnp.int32)
  below = int(np.sum(np.asarray(p) < 0.7))
  _, n = cons.ohem_ce(logits, labels, thresh=0.7, min_kept=3)
  assert int(n) == below  # enough hard pixels: the threshold decides
  _, n = cons.ohem_ce(logits, labels, thresh=0.2, min_kept=10)
  assert int(n) == 10  # too few below thresh: the 10 hardest are kept
  ignored = labels.at[0, 0, :].set(255)
  _, n = cons.ohem_ce(logits, ignored, thresh=0.2, min_kept=1000)
  assert int(n) == 15  # min_kept capped at the valid pixels
  total, n = cons.ohem_ce(logits, labels, thresh=0.2, min_kept=4)
  kept = np.sort(np.asarray(p).ravel())[:4]
  np.testing.assert_allclose(total, -np.log(kept).sum(), rtol=1e-5)


def test_channel_dropout_whole_channels_and_expectation():
  x = jnp.ones((16, 3, 2, 256))
  y = np.asarray(cons.channel_dropout(x, jax.random.key(0), rate=0.5))
  assert set(np.unique(y)) <= {0.0, 2.0}
  assert (y == y[:, :1, :1, :]).all()  # constant over space per (sample, channel)
  assert abs(y.mean() - 1.0) < 0.06
  zeroed = (y[:, 0, 0, :] == 0)
  assert not (zeroed == zeroed[:1]).all()  # the pattern differs between samples
  assert cons.channel_dropout(x, jax.random.key(0), rate=0.0) is x


def test_masked_mse():
  rec = jnp.zeros((1, 2, 2, 3))
  target = jnp.ones((1, 2, 2, 3)) * jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
  mask = jnp.array([[[True, False], [False, True]]])
  s, n = cons.masked_mse(rec, target, mask)
  assert float(s) == 3 * (1 + 16) and float(n) == 6


# ------------------------------------------------------------------------------------- feature aggregation

def test_prototypes_and_ema_hand_case():
  fea = jnp.array([[[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]]])  # [1,1,3,2]
  yhat = jnp.array([[[0, 0, 1]]])
  conf = jnp.array([[[0.5, 1.0, 0.8]]])
  valid = jnp.ones((1, 1, 3), bool)
  ps, ws = feat.class_prototypes(fea, yhat, conf, valid, 3)
  np.testing.assert_allclose(ps, [[3.5, 0.0], [0.0, 1.6], [0.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(ws, [1.5, 0.8, 0.0], rtol=1e-6)
  memory = jnp.array([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
  new = feat.ema_update(memory, ps, ws, mu=0.9)
  np.testing.assert_allclose(new, [[0.9 + 0.1 * 3.5 / 1.5, 0.9], [1.8, 2.0], [5.0, 5.0]], rtol=1e-6)
  # invisible or unconfident positions do not count
  ps2, ws2 = feat.class_prototypes(fea, yhat, conf, valid.at[0, 0, 1].set(False), 3, tau=0.6)
  np.testing.assert_allclose(ws2, [0.0, 0.8, 0.0], rtol=1e-6)
  np.testing.assert_allclose(feat.ema_update(memory, ps2, ws2, 0.9)[0], memory[0])


def test_aggregation_loss_zero_aligned_one_orthogonal():
  memory = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
  fea = jnp.array([[[[2.0, 0.0], [3.0, 0.0], [1.0, 1.0]]]])
  yhat = jnp.array([[[0, 1, 2]]])  # aligned, orthogonal, never-seen class
  conf = jnp.array([[[0.5, 1.0, 1.0]]])
  masked = jnp.ones((1, 1, 3), bool)
  s, n = feat.aggregation_loss(fea, yhat, conf, masked, memory)
  np.testing.assert_allclose([s, n], [1.0, 1.5], rtol=1e-6)  # 0.5 * 0 + 1.0 * 1; class 2 skipped
  s, n = feat.aggregation_loss(fea, yhat, conf, masked.at[0, 0, 1].set(False), memory)
  np.testing.assert_allclose([s, n], [0.0, 0.5], atol=1e-7)
  g = jax.grad(lambda f: feat.aggregation_loss(f, yhat, conf, masked, memory)[0])(jnp.zeros_like(fea))
  assert np.isfinite(np.asarray(g)).all()
  assert np.asarray(feat.resize_nearest(jnp.arange(16).reshape(1, 4, 4), (2, 2))).tolist() == [[[5, 7], [13, 15]]]


# ---------------------------------------------------------------------------------- class-wise reconstruction

def test_classwise_reconstruction_matches_per_class_loop():
  d, c, p, b, h, w = 5, 4, 4, 2, 3, 2
  head = ClassWiseReconstruction(d, c, patch=p, rngs=nnx.Rngs(0))
  head.bias[...] = jax.random.normal(jax.random.key(1), head.bias[...].shape)
  fea = jax.random.normal(jax.random.key(2), (b, h, w, d))
  yhat = jax.random.randint(jax.random.key(3), (b, h, w), 0, c)
  rec = np.asarray(head(fea, jax.nn.one_hot(yhat, c)))
  assert rec.shape == (b, h * p, w * p, 3)
  kernel, bias = np.asarray(head.kernel[...]), np.asarray(head.bias[...])
  f, y = np.asarray(fea), np.asarray(yhat)
  flat = np.zeros((b, h, w, 3 * p * p), np.float32)
  for k in range(c):  # reference: each class's head on its own pixels
    flat += (y == k)[..., None] * (f @ kernel[k] + bias[k])
  ref = np.zeros((b, h * p, w * p, 3), np.float32)
  for i in range(h):
    for j in range(w):
      ref[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :] = flat[:, i, j].reshape(b, p, p, 3)
  np.testing.assert_allclose(rec, ref, rtol=1e-4, atol=1e-5)


def test_pixel_shuffle_and_norm_pix():
  x = jnp.arange(2 * 3 * 5 * 12, dtype=jnp.float32).reshape(2, 3, 5, 12)
  y = pixel_shuffle(x, 2, 3)
  assert y.shape == (2, 6, 10, 3)
  np.testing.assert_array_equal(y[1, 2:4, 4:6].reshape(-1), x[1, 1, 2])
  img = jax.random.uniform(jax.random.key(0), (2, 10, 7, 3)) * 5 + 3
  t = np.asarray(norm_pix_target(img, 4))
  assert t.shape == img.shape
  for block in (t[0, :4, :4], t[1, 8:, 4:]):  # a full and a partial edge block
    np.testing.assert_allclose(block.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(block.std(), 1.0, atol=1e-3)


# ------------------------------------------------------------------------------------------ masks, ensemble

def test_random_patch_mask_exact_count():
  h, w, patch = 20, 28, 4
  mask = np.asarray(random_patch_mask(jax.random.key(0), 3, h, w, patch, 0.7))
  assert mask.shape == (3, h, w) and mask.dtype == bool
  k = num_masked_patches(h, w, patch, 0.7)
  assert k == round(0.7 * 35)
  grid = mask[:, ::patch, ::patch]
  assert (grid.reshape(3, -1).sum(1) == k).all()
  np.testing.assert_array_equal(np.repeat(np.repeat(grid, patch, 1), patch, 2), mask)  # whole patches
  assert not (mask[0] == mask[1]).all()
  img = jnp.ones((3, h, w, 3))
  out = np.asarray(apply_pixel_mask(img, jnp.asarray(mask)))
  assert (out[mask] == 0).all() and (out[~mask] == 1).all()


def test_multiscale_probs_identity_like_model():
  shapes = []

  def apply_fn(x):
    shapes.append(x.shape[1:3])
    return 10.0 * x  # logits = scaled image channels

  vals = jax.random.uniform(jax.random.key(0), (2, 1, 1, 3))
  images = jnp.broadcast_to(vals, (2, 16, 12, 3))  # constant images resize exactly
  probs = multiscale_probs(apply_fn, images, scales=(0.75, 1.0, 1.25))
  assert shapes == [(12, 9), (16, 12), (20, 15)]
  assert probs.shape == (2, 16, 12, 3)
  np.testing.assert_allclose(probs, jax.nn.softmax(10.0 * images), rtol=1e-5)
  ramp = jax.random.normal(jax.random.key(1), (1, 8, 8, 3))
  np.testing.assert_allclose(multiscale_probs(apply_fn, ramp, scales=(1.0,)), jax.nn.softmax(10.0 * ramp),
                             rtol=1e-5)


# --------------------------------------------------------------------------------------------- sharded jit

def test_blocks_under_jit_on_explicit_mesh_match_unsharded():
  """The train step runs these on a batch sharded over `data` (make_mesh defaults to Explicit axes)."""
  mesh = jax.make_mesh((8,), ("data",))
  shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  logits = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  labels = jax.random.randint(jax.random.key(1), (8, 8, 8), 0, 4)  # 3 = "ignore" below

  @jax.jit
  def blocks(logits, labels):
    yhat, conf = cons.pseudo_labels(logits)
    box = random_patch_mask(jax.random.key(2), 8, 8, 8, 4, 0.5)
    y, c, ig = cons.cutmix_targets(yhat, conf, labels == 3, box, cons.roll_partner(8))
    ps, ws = feat.class_prototypes(logits, yhat, conf, ~box, 3)
    memory = feat.ema_update(jnp.zeros((3, 3)), ps, ws)
    return (cons.confident_ce(logits, y, c, ig, 0.5), cons.ohem_ce(logits, jnp.minimum(labels, 2), 0.7, 50),
            feat.aggregation_loss(logits, yhat, conf, box, memory), memory,
            cons.masked_mse(logits, norm_pix_target(logits, 4), box),
            cons.cutmix_mix(logits, box, cons.roll_partner(8)))

  ref = blocks(logits, labels)
  out = blocks(jax.device_put(logits, shard), jax.device_put(labels, shard))
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
