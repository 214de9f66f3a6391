"""Reconstruction losses against the published formulas, recomputed here in float64 numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from maskseg_jax.losses import reconstruction as rec


def _np_window(size, sigma, gaussian):
  if not gaussian:
    return np.full((size, size), 1.0 / (size * size))
  c = np.arange(size) - (size - 1) / 2.0
  g2 = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma**2))  # 2-D directly, not separable
  return g2 / g2.sum()


def _np_ssim_cs(x, y, size=11, sigma=1.5, gaussian=True, max_val=1.0):
  """SSIM and cs maps by Wang et al. 2004, eq. 13, with an explicit 2-D window over every 'valid' position."""
  w = _np_window(size, sigma, gaussian)
  win = lambda a: sliding_window_view(a, (size, size), axis=(1, 2))  # [B, H', W', C, s, s]
  wx, wy = win(x), win(y)
  mx, my = (wx * w).sum((-1, -2)), (wy * w).sum((-1, -2))
  vx = (((wx - mx[..., None, None]) ** 2) * w).sum((-1, -2))
  vy = (((wy - my[..., None, None]) ** 2) * w).sum((-1, -2))
  cxy = ((wx - mx[..., None, None]) * (wy - my[..., None, None]) * w).sum((-1, -2))
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
  cs = (2 * cxy + c2) / (vx + vy + c2)
  return lum * cs, cs


def _np_down(a):
  b, h, w, c = a.shape
  a = np.concatenate([a, a[:, -1:]], 1) if h % 2 else a
  a = np.concatenate([a, a[:, :, -1:]], 2) if w % 2 else a
  out = np.zeros((b, a.shape[1] // 2, a.shape[2] // 2, c))
  for di in (0, 1):
    for dj in (0, 1):
      out += a[:, di::2, dj::2] / 4.0
  return out


def _np_ms_ssim(x, y, weights, size, max_val=1.0):
  x, y = x.astype(np.float64), y.astype(np.float64)
  per_channel = np.ones((x.shape[0], x.shape[3]))
  for j, wj in enumerate(weights):
    s, cs = _np_ssim_cs(x, y, size=size, max_val=max_val)
    v = (s if j == len(weights) - 1 else cs).mean((1, 2))
    per_channel *= np.maximum(v, 0.0) ** wj
    x, y = _np_down(x), _np_down(y)
  return per_channel.mean(-1)


def _smooth_images(seed, shape):
  """Random but spatially correlated images in [0, 1], so every scale has structure."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(size=shape)
  for axis in (1, 2):
    base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3.0
  return base.astype(np.float32)


def test_l1_sum_and_count():
  pred = jnp.zeros((2, 3, 4, 3))
  target = jnp.ones((2, 3, 4, 3)) * 0.5
  s, c = rec.l1(pred, target)
  assert float(s) == pytest.approx(0.5 * 72) and float(c) == 72
  valid = jnp.array([True, False])[:, None, None, None]
  s, c = rec.l1(pred, target, valid)
  assert float(s) == pytest.approx(0.5 * 36) and float(c) == 36
  pix = jnp.zeros((2, 3, 4, 1), bool).at[0, 0, :2].set(True)
  s, c = rec.l1(pred, target, pix)
  assert float(s) == pytest.approx(0.5 * 6) and float(c) == 6


def test_ssim_identical_is_one():
  x = jnp.asarray(_smooth_images(0, (2, 24, 20, 3)))
  np.testing.assert_allclose(rec.ssim(x, x), 1.0, atol=1e-6)
  np.testing.assert_allclose(rec.ssim(x, x, window=3, gaussian=False, padding="reflect"), 1.0, atol=1e-6)
  assert rec.ssim_map(x, x).shape == (2, 14, 10, 3)
  assert rec.ssim_map(x, x, window=3, gaussian=False, padding="reflect").shape == (2, 24, 20, 3)


def test_ssim_constant_images_is_luminance_term():
  a, b = 0.2, 0.7
  x = jnp.full((1, 16, 16, 1), a)
  y = jnp.full((1, 16, 16, 1), b)
  c1 = (0.01 * 1.0) ** 2
  expected = (2 * a * b + c1) / (a * a + b * b + c1)
  np.testing.assert_allclose(rec.ssim(x, y), expected, rtol=1e-5)
  np.testing.assert_allclose(rec.ssim(x, y, window=3, gaussian=False), expected, rtol=1e-5)
  # max_val = 255 scales both constants.
  c1 = (0.01 * 255) ** 2
  exp255 = (2 * 51 * 178.5 + c1) / (51**2 + 178.5**2 + c1)
  np.testing.assert_allclose(rec.ssim(x * 255, y * 255, max_val=255.0), exp255, rtol=1e-5)


@pytest.mark.parametrize("gaussian,size", [(True, 11), (True, 7), (False, 3)])
def test_ssim_matches_numpy_formula(gaussian, size):
  x = _smooth_images(1, (2, 19, 23, 3))
  y = np.clip(x + np.random.default_rng(2).normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  got = rec.ssim_map(jnp.asarray(x), jnp.asarray(y), window=size, gaussian=gaussian)
  want, _ = _np_ssim_cs(x.astype(np.float64), y.astype(np.float64), size=size, gaussian=gaussian)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_ssim_reflect_padding_matches_padded_valid():
  x = _smooth_images(3, (1, 10, 12, 2))
  y = _smooth_images(4, (1, 10, 12, 2))
  got = rec.ssim_map(jnp.asarray(x), jnp.asarray(y), window=3, gaussian=False, padding="reflect")
  pad = lambda a: np.pad(a.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  want, _ = _np_ssim_cs(pad(x), pad(y), size=3, gaussian=False)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_ms_ssim_identical_is_one_full_five_scales():
  x = jnp.asarray(_smooth_images(5, (1, 161, 170, 1)))  # 161 px is the smallest side for 5 scales x 11 window
  np.testing.assert_allclose(rec.ms_ssim(x, x), 1.0, atol=1e-6)


def test_ms_ssim_too_small_raises_clear_error():
  x = jnp.zeros((1, 160, 160, 3))
  with pytest.raises(ValueError, match=r"too small for 5 scales with window 11.*161"):
    rec.ms_ssim(x, x)
  # Fewer scales fit.
  np.testing.assert_allclose(rec.ms_ssim(x + 0.5, x + 0.5, weights=(0.5, 0.5), window=7), 1.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 29, 35, 2)])
def test_ms_ssim_matches_numpy_reference(shape):
  weights = (0.2, 0.3, 0.5)
  x = _smooth_images(6, shape)
  y = np.clip(x + np.random.default_rng(7).normal(0, 0.08, shape), 0, 1).astype(np.float32)
  got = rec.ms_ssim(jnp.asarray(x), jnp.asarray(y), weights=weights, window=7)
  want = _np_ms_ssim(x, y, weights, size=7)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_ms_ssim_decreases_with_noise():
  x = _smooth_images(8, (1, 48, 48, 3))
  noise = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
  kw = dict(weights=(0.3, 0.3, 0.4), window=7)
  vals = [float(rec.ms_ssim(jnp.asarray(x), jnp.asarray(x + s * noise), **kw)[0]) for s in (0.0, 0.02, 0.05, 0.1, 0.2)]
  assert vals[0] == pytest.approx(1.0, abs=1e-6)
  assert all(a > b for a, b in zip(vals, vals[1:])), vals


def test_reconstruction_loss_value_and_finite_gradients():
  kw = dict(weights=(0.5, 0.5), window=5)
  target = jnp.asarray(_smooth_images(10, (2, 16, 16, 3)))
  loss, m = rec.reconstruction_loss(target, target, max_val=1.0, ms_ssim_kwargs=kw)
  assert float(loss) == pytest.approx(0.0, abs=1e-6)
  # Anti-correlated prediction drives cs negative: the clamp keeps loss and gradients finite.
  pred = 1.0 - target
  loss, m = jax.jit(lambda p: rec.reconstruction_loss(p, target, max_val=1.0, ms_ssim_kwargs=kw))(pred)
  want = float(jnp.abs(pred - target).mean()) + 1.0 - float(rec.ms_ssim(pred, target, **kw).mean())
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert set(m) == {"loss", "l1", "ms_ssim"}
  for p in (pred, target + 0.05 * jnp.asarray(np.random.default_rng(1).normal(size=target.shape), jnp.float32)):
    g = jax.grad(lambda q: rec.reconstruction_loss(q, target, max_val=1.0, ms_ssim_kwargs=kw)[0])(p)
    assert np.isfinite(np.asarray(g)).all()


def test_reconstruction_loss_valid_mask_ignores_padding():
  kw = dict(weights=(0.5, 0.5), window=5)
  target = jnp.asarray(_smooth_images(11, (2, 16, 16, 3)))
  pred = target.at[1].set(0.0)  # sample 1 is padding with a terrible prediction
  loss, _ = rec.reconstruction_loss(pred, target, max_val=1.0, ms_ssim_kwargs=kw, valid=jnp.array([True, False]))
  assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_loss_ssim3_similarity():
  """similarity="ssim3" (the authors' selective loop): L1 + 1 - SSIM with a 3 px Gaussian window, whole image."""
  target = jnp.asarray(_smooth_images(12, (2, 16, 16, 3)))
  pred = jnp.clip(target + 0.1 * jnp.asarray(np.random.default_rng(2).normal(size=target.shape), jnp.float32), 0, 1)
  loss, m = rec.reconstruction_loss(pred, target, max_val=1.0, similarity="ssim3")
  ssim3 = float(rec.ssim(pred, target, window=3, gaussian=True).mean())
  assert set(m) == {"loss", "l1", "ssim3"} and float(m["ssim3"]) == pytest.approx(ssim3, rel=1e-6)
  assert float(loss) == pytest.approx(float(jnp.abs(pred - target).mean()) + 1.0 - ssim3, rel=1e-6)
  ms, _ = rec.reconstruction_loss(pred, target, max_val=1.0, ms_ssim_kwargs=dict(weights=(0.5, 0.5), window=5))
  assert abs(float(ms) - float(loss)) > 1e-3
  with pytest.raises(ValueError, match="reconstruction similarity 'ssim5'; expected one of"):
    rec.reconstruction_loss(pred, target, max_val=1.0, similarity="ssim5")
