"""Confusion matrix / IoU and the segmentation losses on hand-built inputs with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskseg_jax import metrics, sharding
from maskseg_jax.losses import segmentation as L


def test_confusion_matrix_counts_and_ignores():
  labels = jnp.array([[0, 1, 255], [2, 2, 1]])
  pred = jnp.array([[0, 2, 1], [2, 0, 1]])
  conf = np.asarray(metrics.confusion_matrix(pred, labels, 3))
  expected = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1]])
  np.testing.assert_array_equal(conf, expected)
  region = jnp.array([[True, True, True], [False, False, False]])
  conf_r = np.asarray(metrics.confusion_matrix(pred, labels, 3, region=region))
  assert conf_r.sum() == 2


def test_confusion_matrix_is_additive_under_padding_and_sharding():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, (8, 6, 6))
  pred = rng.integers(0, 4, (8, 6, 6))
  full = np.asarray(metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(labels), 4))
  padded_labels = np.concatenate([labels, np.full((8, 6, 6), 255)])
  padded_pred = np.concatenate([pred, rng.integers(0, 4, (8, 6, 6))])
  mesh = sharding.make_mesh()
  sh = sharding.batch_sharding(mesh)
  f = jax.jit(lambda p, l: metrics.confusion_matrix(p, l, 4))
  got = np.asarray(f(jax.device_put(padded_pred, sh), jax.device_put(padded_labels, sh)))
  np.testing.assert_array_equal(got, full)


def test_iou_summary_skips_absent_classes():
  conf = np.array([[3, 1, 0], [1, 1, 0], [0, 0, 0]])
  ious = metrics.iou_per_class(conf)
  np.testing.assert_allclose(ious[:2], [3 / 5, 1 / 3])
  assert np.isnan(ious[2])
  s = metrics.summarize(conf, "val", ["a", "b", "c"])
  assert s["val/miou"] == pytest.approx((3 / 5 + 1 / 3) / 2)
  assert s["val/pixel_acc"] == pytest.approx(4 / 6)
  assert "val/iou/c" not in s and s["val/iou/a"] == pytest.approx(0.6)


def test_cross_entropy_sum_count_with_ignore():
  logits = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
  labels = jnp.array([0, 1, 255])
  total, count = L.cross_entropy(logits, labels)
  assert float(count) == 2.0
  np.testing.assert_allclose(float(total), -np.log(0.5) - np.log(0.1), rtol=1e-5)


def test_weighted_cross_entropy_matches_formula():
  logits = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
  labels = jnp.array([0, 1, 1])
  w = np.array([0.25, 2.0], np.float32)
  total, count = L.weighted_cross_entropy(logits, labels, w)
  expect = (0.25 * -np.log(0.5) + 2.0 * -np.log(0.1) + 2.0 * -np.log(0.8))
  np.testing.assert_allclose(float(total), expect, rtol=1e-5)
  assert float(count) == pytest.approx(4.25)
  total_r, count_r = L.weighted_cross_entropy(logits, labels, w, region=jnp.array([True, False, False]))
  np.testing.assert_allclose(float(total_r / count_r), -np.log(0.5), rtol=1e-5)


def test_lmae_class_weights_formula_and_order():
  f = np.array([0.6, 0.3, 0.08, 0.02])
  w = L.lmae_class_weights(f, beta=1.0, gamma=1.0, xi=1e-6)
  mean, var = f.mean(), f.var()
  expect = 1 - 1 / (1 + np.exp(-(f - mean) / (var + 1e-6)))
  np.testing.assert_allclose(w, expect, rtol=1e-5)
  assert np.all(np.diff(w) > 0)  # rarer class -> larger weight
  np.testing.assert_allclose(L.class_frequencies([6, 3, 1]), [0.6, 0.3, 0.1])
  with pytest.raises(ValueError, match="no non-void pixel"):
    L.class_frequencies([0, 0])
