"""Patch masks: static K, the background proportion and the strategies' ordering on hand-built labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.lmae import patch_masks as P


def _label():
  """8x8 label, p=4 -> 4 patches: all background, all void, all class 2, half class 1 / half background."""
  lab = np.zeros((1, 8, 8), np.int32)
  lab[0, :4, 4:] = 255
  lab[0, 4:, :4] = 2
  lab[0, 4:, 4:6] = 1
  return jnp.asarray(lab)


def test_patchify_round_trip_and_order():
  x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
  t = P.patchify(x, 4)
  assert t.shape == (2, 6, 48)
  np.testing.assert_array_equal(t[1, 1], x[1, 0:4, 4:8].reshape(-1))  # row-major patches
  np.testing.assert_array_equal(t[0, 3], x[0, 4:8, 0:4].reshape(-1))
  np.testing.assert_array_equal(P.unpatchify(t, 4, 8, 12), x)


@pytest.mark.parametrize("ratio,k", [(0.0, 16), (0.5, 8), (0.75, 4)])
def test_num_visible_and_static_mask_shapes(ratio, k):
  assert P.num_visible(16, ratio) == k
  scores = jax.random.uniform(jax.random.key(1), (3, 16))
  keep, masked, mask = jax.jit(P.mask_from_scores, static_argnums=1)(scores, k)
  assert keep.shape == (3, k) and masked.shape == (3, 16 - k) and mask.shape == (3, 16)
  assert int(mask.sum()) == 3 * (16 - k)
  for i in range(3):
    assert sorted(np.concatenate([keep[i], masked[i]]).tolist()) == list(range(16))
    assert not mask[i, keep[i]].any() and mask[i, masked[i]].all()
    if 16 - k:  # the highest scores are the masked ones
      assert scores[i, masked[i]].min() >= scores[i, keep[i]].max()


def test_num_visible_guards():
  assert P.num_visible(100, 0.9) == 10  # float error would give 9
  assert P.num_visible(196, 0.75) == 49
  with pytest.raises(ConfigError):
    P.num_visible(16, 1.0)


def test_background_proportion_hand_built():
  b = P.background_proportion(_label(), 4, background_classes=[0])
  np.testing.assert_allclose(b, [[1.0, 1.0, 0.0, 0.5]])
  b = P.background_proportion(_label(), 4, background_classes=[])  # only void counts
  np.testing.assert_allclose(b, [[0.0, 1.0, 0.0, 0.0]])


def test_background_first_and_label_first_order():
  b = P.background_proportion(_label(), 4, background_classes=[0])
  for seed in range(5):
    key = jax.random.key(seed)
    _, masked, _ = P.mask_from_scores(P.background_first_scores(key, b), 2)
    assert set(masked[0].tolist()) == {0, 1}  # the two background/void patches
    keep, masked, _ = P.mask_from_scores(P.label_first_scores(key, b), 3)
    assert masked[0].tolist() == [2] and keep[0].tolist() == [0, 1, 3]  # fully labelled patch first
    _, masked, _ = P.mask_from_scores(P.label_first_scores(key, b), 2)
    assert masked[0].tolist() == [2, 3]


def test_mixed_strategy_frequencies():
  n, l = 5000, 16
  b = jnp.tile(jnp.linspace(0.05, 0.95, l), (n, 1))
  key = jax.random.key(7)
  scores = P.mixed_strategy_scores(key, b)
  _, k_noise = jax.random.split(key)
  refs = jnp.stack([P.MASK_STRATEGIES[s](k_noise, b) for s in P.STRATEGY_ORDER])  # [3,n,l]
  match = jnp.all(refs == scores[None], axis=-1)  # [3,n]
  assert bool(jnp.all(match.sum(0) == 1))  # each sample follows exactly one strategy
  freq = np.asarray(match.mean(axis=1))
  np.testing.assert_allclose(freq, [0.2, 0.4, 0.4], atol=0.03)


def test_forced_scores_always_masked():
  key = jax.random.key(3)
  b = jax.random.uniform(key, (64, 16))
  force = jax.random.bernoulli(jax.random.key(4), 0.2, (64, 16))
  scores = P.forced_scores(P.background_first_scores(key, b), force)
  _, _, mask = P.mask_from_scores(scores, 8)
  rows = np.asarray(force.sum(-1) <= 8)
  assert rows.sum() > 50
  assert bool(jnp.all(jnp.where(force[rows], mask[rows], True)))


def test_patches_containing():
  unknown = jnp.zeros((1, 8, 8), bool).at[0, 5, 1].set(True)
  np.testing.assert_array_equal(P.patches_containing(unknown, 4), [[False, False, True, False]])
