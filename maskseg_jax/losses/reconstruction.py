"""Image reconstruction losses: L1, SSIM and MS-SSIM on images [B, H, W, C].

Selective-masking pretraining trains on `L1 + (1 - MS-SSIM)` and scores tiles with `L1 + (1 - SSIM)` over a
3x3 window, so all three live here as pure jnp functions (jittable, shape-static, shard-agnostic).

Images are float arrays whose values lie in `[0, max_val]` (the SSIM constants are `(k * max_val) ** 2`).
SSIM's luminance term assumes non-negative intensities: feed mean/std-normalized images back through
`x * std + mean` (to [0, 1]) first, or the luminance term can turn negative when the two means differ in sign.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales.


def _as_float(x: jax.Array) -> jax.Array:
  """Compute in at least float32: bf16 variances lose the signal in E[x^2] - E[x]^2."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l1(pred: jax.Array, target: jax.Array, weight: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Absolute error as `(sum, count)` so callers divide once, correct under padding and sharding.

  `weight` broadcasts to `pred.shape` (e.g. a bool[B, 1, 1, 1] validity mask or a bool[B, H, W, 1] pixel
  mask); `count` is the summed broadcast weight, i.e. the number of elements counted for a 0/1 mask.
  """
  err = jnp.abs(_as_float(pred) - _as_float(target))
  if weight is None:
    return err.sum(), jnp.asarray(err.size, err.dtype)
  w = jnp.broadcast_to(jnp.asarray(weight).astype(err.dtype), err.shape)
  return (err * w).sum(), w.sum()


def _window_1d(window: int, sigma: float, gaussian: bool) -> np.ndarray:
  """Normalized 1-D window; the 2-D window is its outer product (separable filtering)."""
  if not isinstance(window, (int, np.integer)) or window < 1:
    raise ValueError(f"SSIM window must be a positive int, got {window!r}")
  if not gaussian:
    return np.full((window,), 1.0 / window)
  if sigma <= 0:
    raise ValueError(f"SSIM Gaussian sigma must be > 0, got {sigma!r}")
  coords = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
  g = np.exp(-(coords**2) / (2.0 * sigma**2))
  return g / g.sum()


def _band_matrix(size: int, kernel: np.ndarray) -> np.ndarray:
  """[size - k + 1, size] matrix whose rows hold the window at every 'valid' offset."""
  k = len(kernel)
  m = np.zeros((size - k + 1, size), np.float64)
  for i in range(size - k + 1):
    m[i, i:i + k] = kernel
  return m


def _filter_valid(x: jax.Array, kernel: np.ndarray) -> jax.Array:
  """Separable 'valid' filtering over H and W of [B, H, W, C] as two banded matmuls.

  Measured on CPU (8x256x256x3, 5-scale MS-SSIM + grad): ~10x faster than depthwise convs and far quicker to
  compile than shifted-slice sums. HIGHEST precision because variances come from differences of moments and
  TPU/GPU default matmul precision (bf16/tf32 passes) would swamp them.
  """
  hi = jax.lax.Precision.HIGHEST
  band = lambda size: _band_matrix(size, kernel).astype(x.dtype)  # float64 weights for float64 images
  rows = jnp.einsum("ph,bhwc->bpwc", band(x.shape[1]), x, precision=hi)
  return jnp.einsum("qw,bpwc->bpqc", band(x.shape[2]), rows, precision=hi)


@functools.partial(jax.jit, static_argnames=("window", "sigma", "gaussian", "max_val", "k1", "k2", "padding"))
def _ssim_and_cs_maps(x, y, *, window, sigma, gaussian, max_val, k1, k2, padding):
  """Per-pixel SSIM and contrast-structure (cs) maps of Wang et al. 2004, eq. 13.

  Jitted (window and constants static) so eager callers compile once; under an outer jit it is inlined.
  """
  x, y = _as_float(x), _as_float(y)
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"SSIM expects two images of equal shape [B, H, W, C], got {x.shape} and {y.shape}")
  kernel = _window_1d(window, sigma, gaussian)
  if padding == "reflect":
    before, after = (window - 1) // 2, window // 2
    pad = ((0, 0), (before, after), (before, after), (0, 0))
    if min(x.shape[1], x.shape[2]) <= max(before, after):
      raise ValueError(f"reflect padding needs H and W > {max(before, after)}, got {x.shape[1:3]}")
    x, y = jnp.pad(x, pad, mode="reflect"), jnp.pad(y, pad, mode="reflect")
  elif padding != "valid":
    raise ValueError(f"SSIM padding must be 'valid' or 'reflect', got {padding!r}")
  if min(x.shape[1], x.shape[2]) < window:
    raise ValueError(
        f"SSIM window {window} is larger than the image ({x.shape[1]}x{x.shape[2]}); use a smaller window")
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  # (Co)variances are shift-invariant: centering each image on its own mean first keeps float32
  # E[x^2] - E[x]^2 from cancelling catastrophically (a constant image then has exactly zero variance).
  shift_x = jax.lax.stop_gradient(x.mean(axis=(1, 2), keepdims=True))
  shift_y = jax.lax.stop_gradient(y.mean(axis=(1, 2), keepdims=True))
  x, y = x - shift_x, y - shift_y
  mu_xc, mu_yc = _filter_valid(x, kernel), _filter_valid(y, kernel)
  var_x = _filter_valid(x * x, kernel) - mu_xc * mu_xc
  var_y = _filter_valid(y * y, kernel) - mu_yc * mu_yc
  cov = _filter_valid(x * y, kernel) - mu_xc * mu_yc
  mu_x, mu_y = mu_xc + shift_x, mu_yc + shift_y
  luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
  cs = (2.0 * cov + c2) / (var_x + var_y + c2)
  return luminance * cs, cs


def ssim_map(x: jax.Array, y: jax.Array, *, window: int = 11, sigma: float = 1.5, gaussian: bool = True,
             max_val: float = 1.0, k1: float = 0.01, k2: float = 0.03, padding: str = "valid") -> jax.Array:
  """Per-pixel, per-channel SSIM (Wang et al. 2004) of [B, H, W, C] images.

  Defaults are the paper's 11x11 Gaussian (sigma 1.5) window. Tile scoring uses `window=3, gaussian=False`
  (uniform 3x3). `padding="valid"` (as in the paper, TF and pytorch_msssim) returns
  [B, H - window + 1, W - window + 1, C]; `padding="reflect"` returns a full-size [B, H, W, C] map so it
  aligns with per-pixel tile ids.
  """
  return _ssim_and_cs_maps(x, y, window=window, sigma=float(sigma), gaussian=bool(gaussian), max_val=float(max_val),
                           k1=float(k1), k2=float(k2), padding=padding)[0]


def ssim(x: jax.Array, y: jax.Array, **kwargs: Any) -> jax.Array:
  """Mean SSIM per image, float[B] (mean over the map and channels); kwargs as in `ssim_map`.

  Per image rather than a scalar so callers can drop padded samples before averaging.
  """
  return ssim_map(x, y, **kwargs).mean(axis=(1, 2, 3))


def _avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2; odd sides first repeat their last row/column (TF's symmetric pad)."""
  pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
  if pad_h or pad_w:
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim_scale_sizes(height: int, width: int, num_scales: int) -> list[tuple[int, int]]:
  """Image size at each MS-SSIM scale (each 2x pool rounds odd sides up)."""
  sizes = [(height, width)]
  for _ in range(num_scales - 1):
    h, w = sizes[-1]
    sizes.append(((h + 1) // 2, (w + 1) // 2))
  return sizes


def _safe_pow(base: jax.Array, exponent: float) -> jax.Array:
  """`relu(base) ** exponent` whose gradient is 0 (not NaN/inf) where base <= 0."""
  positive = base > 0
  safe = jnp.where(positive, base, 1.0)
  return jnp.where(positive, safe**exponent, 0.0)


def ms_ssim(x: jax.Array, y: jax.Array, *, max_val: float = 1.0, weights: Sequence[float] = MS_SSIM_WEIGHTS,
            window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Multi-scale SSIM (Wang et al. 2003) per image, float[B].

  As in pytorch_msssim and `tf.image.ssim_multiscale`: per channel, the mean contrast-structure term cs at
  every scale but the last, the full SSIM (luminance * cs) at the last scale, 2x2 average pooling between
  scales, `prod_j value_j ** weights_j`, then the mean over channels. The number of scales is `len(weights)`
  (the weights are used as given, not renormalized).

  Stability: cs (and the last-scale SSIM) can be slightly negative, and a negative base to a fractional
  power is NaN, so each term is clamped at 0 (relu) before the power, with a zero gradient there.

  Small images: every scale must still hold the window (side >= window at the coarsest scale, i.e. 161 px
  for 5 scales and window 11). For small crops pass fewer weights (e.g. 3 scales) and/or a smaller window;
  too small an image raises ValueError saying which sizes would work.
  """
  x, y = _as_float(x), _as_float(y)
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"MS-SSIM expects two images of equal shape [B, H, W, C], got {x.shape} and {y.shape}")
  weights = tuple(float(w) for w in weights)
  if not weights:
    raise ValueError("MS-SSIM needs at least one scale weight")
  sizes = ms_ssim_scale_sizes(x.shape[1], x.shape[2], len(weights))
  if min(sizes[-1]) < window:
    need = (window - 1) * 2 ** (len(weights) - 1) + 1
    raise ValueError(
        f"MS-SSIM: a {x.shape[1]}x{x.shape[2]} image is too small for {len(weights)} scales with window "
        f"{window}: the coarsest scale would be {sizes[-1][0]}x{sizes[-1][1]}. Need min(H, W) >= {need}; "
        "pass fewer `weights` (scales) or a smaller `window`.")
  return _ms_ssim(x, y, max_val=float(max_val), weights=weights, window=window, sigma=float(sigma), k1=float(k1),
                  k2=float(k2))


@functools.partial(jax.jit, static_argnames=("max_val", "weights", "window", "sigma", "k1", "k2"))
def _ms_ssim(x, y, *, max_val, weights, window, sigma, k1, k2):
  """The jitted body of `ms_ssim` (arguments already validated; weights a hashable tuple)."""
  value = 1.0
  for i, w in enumerate(weights):
    ssim_i, cs_i = _ssim_and_cs_maps(x, y, window=window, sigma=sigma, gaussian=True, max_val=max_val, k1=k1,
                                     k2=k2, padding="valid")
    last = i == len(weights) - 1
    term = (ssim_i if last else cs_i).mean(axis=(1, 2))  # [B, C]
    value = value * _safe_pow(term, w)
    if not last:
      x, y = _avg_pool2(x), _avg_pool2(y)
  return value.mean(axis=-1)


# The similarity term of `reconstruction_loss`, per image float[B]. "ms_ssim": the spec's and the authors' random
# baseline (`ms_ssim_kwargs` apply). "ssim3": SSIM with a 3 px Gaussian window (sigma 1.5, 'valid') over the whole
# image, which is what the authors' selective loop trains on (its model class swaps MS-SSIM for that SSIM).
SIMILARITIES = {
    "ms_ssim": lambda pred, target, max_val, kwargs: ms_ssim(pred, target, max_val=max_val, **kwargs),
    "ssim3": lambda pred, target, max_val, kwargs: ssim(pred, target, window=3, gaussian=True, max_val=max_val),
}


def reconstruction_loss(pred: jax.Array, target: jax.Array, *, max_val: float,
                        ms_ssim_kwargs: Mapping[str, Any] | None = None,
                        valid: jax.Array | None = None,
                        similarity: str = "ms_ssim") -> tuple[jax.Array, dict[str, jax.Array]]:
  """Pretraining loss `L1 + (1 - MS-SSIM)` over the whole image, weights 1:1.

  `ms_ssim_kwargs` go to `ms_ssim` (e.g. fewer `weights`/smaller `window` for small crops). `valid`
  (bool[B], optional) drops padded samples from both terms. `similarity` picks the SSIM term
  (`SIMILARITIES`). Returns the scalar loss and `{"loss", "l1", similarity}` (batch means).
  """
  if similarity not in SIMILARITIES:
    raise ValueError(f"reconstruction similarity {similarity!r}; expected one of {sorted(SIMILARITIES)}")
  pred, target = _as_float(pred), _as_float(target)
  kwargs = dict(ms_ssim_kwargs or {})
  if "max_val" in kwargs:
    raise ValueError("pass max_val to reconstruction_loss directly, not inside ms_ssim_kwargs")
  per_image = SIMILARITIES[similarity](pred, target, max_val, kwargs)
  if valid is None:
    l1_sum, l1_count = l1(pred, target)
    sim = per_image.mean()
  else:
    v = jnp.asarray(valid).astype(pred.dtype)
    l1_sum, l1_count = l1(pred, target, v[:, None, None, None])
    sim = (per_image * v).sum() / jnp.maximum(v.sum(), 1.0)
  l1_mean = l1_sum / jnp.maximum(l1_count, 1.0)
  loss = l1_mean + (1.0 - sim)
  return loss, {"loss": loss, "l1": l1_mean, similarity: sim}
