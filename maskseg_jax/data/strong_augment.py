"""Strong augmentations of the weak-to-strong consistency methods (UniMatch, S4MIM, MaskMatch).

Numpy only, on uint8 HxWx3 images, with the `np.random.Generator` passed in so grain workers stay
reproducible. The CutMix *paste* needs a partner image, so it runs on device in the train step
(`maskseg_jax.losses.consistency.cutmix_mix`); here we only draw the boxes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

UNLABELED_PAD = 254  # label value of padded pixels of unlabeled crops (treated as ignore)
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2 luma, as PIL "L" and torchvision


@dataclasses.dataclass(frozen=True)
class StrongAugConfig:
  """Probabilities and ranges of one strong view; defaults are UniMatch's."""
  jitter_p: float = 0.8
  brightness: float = 0.5
  contrast: float = 0.5
  saturation: float = 0.5
  hue: float = 0.25
  grayscale_p: float = 0.2
  blur_p: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  cutmix_p: float = 0.5
  cutmix_area: tuple[float, float] = (0.02, 0.4)
  cutmix_aspect: tuple[float, float] = (0.3, 1 / 0.3)

  @classmethod
  def from_config(cls, semi_config: Any = None) -> StrongAugConfig:
    """Reads the optional `config.semi` fields of the same names; missing ones keep the defaults."""
    if semi_config is None:
      return cls()
    values = {}
    for f in dataclasses.fields(cls):
      v = semi_config.get(f.name, None) if hasattr(semi_config, "get") else getattr(semi_config, f.name, None)
      if v is not None:
        values[f.name] = tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else float(v)
    return cls(**values)


def _to_gray(x: np.ndarray) -> np.ndarray:
  """float[H,W,3] -> float[H,W] luma."""
  return x @ _GRAY


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """float[..., 3] in [0, 1] -> hsv in [0, 1] (hue as a fraction of a turn)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc = np.maximum(np.maximum(r, g), b)  # faster than .max(-1) over a length-3 axis
  minc = np.minimum(np.minimum(r, g), b)
  delta = maxc - minc
  safe_delta = np.where(delta > 0, delta, 1.0)
  s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
  h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return np.stack([h, s, maxc], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """Inverse of `_rgb_to_hsv`: channel n in (r, g, b) is v - v s clip(min(k, 4 - k), 0, 1), k = (n' + 6h) mod 6."""
  h6, s, v = hsv[..., 0] * 6.0, hsv[..., 1], hsv[..., 2]
  out = []
  for n in (5.0, 3.0, 1.0):
    k = (n + h6) % 6.0
    out.append(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
  return np.stack(out, -1)


def _adjust_hue(x: np.ndarray, shift: float) -> np.ndarray:
  hsv = _rgb_to_hsv(x / 255.0)
  hsv[..., 0] = (hsv[..., 0] + shift) % 1.0
  return _hsv_to_rgb(hsv) * 255.0


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float = 0.5, contrast: float = 0.5,
                 saturation: float = 0.5, hue: float = 0.25) -> np.ndarray:
  """torchvision-style ColorJitter: the four ops in a random order, each factor drawn once.

  Brightness scales by U[1-b, 1+b]; contrast blends with the mean gray; saturation blends with the
  per-pixel grayscale; hue rotates by U[-h, h] of a turn in HSV. Each op clips to [0, 255].
  """
  x = np.asarray(img, np.float32)
  factors = [
      rng.uniform(max(0.0, 1 - brightness), 1 + brightness),
      rng.uniform(max(0.0, 1 - contrast), 1 + contrast),
      rng.uniform(max(0.0, 1 - saturation), 1 + saturation),
      rng.uniform(-hue, hue),
  ]
  for op in rng.permutation(4):
    f = factors[op]
    if op == 0:
      x = x * f
    elif op == 1:
      x = f * x + (1 - f) * _to_gray(x).mean()
    elif op == 2:
      x = f * x + (1 - f) * _to_gray(x)[..., None]
    else:
      x = _adjust_hue(x, f)
    x = np.clip(x, 0.0, 255.0)
  return np.round(x).astype(np.uint8)


def grayscale(img: np.ndarray) -> np.ndarray:
  """uint8[H,W,3] -> uint8[H,W,3] with three equal luma channels."""
  g = np.round(_to_gray(np.asarray(img, np.float32)))
  return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def random_grayscale(img: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
  return grayscale(img) if rng.random() < p else img


def _gaussian_kernel(sigma: float) -> np.ndarray:
  radius = max(1, int(math.ceil(3.0 * sigma)))
  t = np.arange(-radius, radius + 1, dtype=np.float32)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return k / k.sum()


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur (kernel truncated at 3 sigma, edge padding) of a uint8 HxWx3 image."""
  k = _gaussian_kernel(sigma)
  r = len(k) // 2
  x = np.asarray(img, np.float32)
  h, w = x.shape[:2]
  xp = np.pad(x, ((r, r), (0, 0), (0, 0)), mode="edge")
  x = sum(wk * xp[i:i + h] for i, wk in enumerate(k))
  xp = np.pad(x, ((0, 0), (r, r), (0, 0)), mode="edge")
  x = sum(wk * xp[:, i:i + w] for i, wk in enumerate(k))
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, sigma_range: tuple[float, float] = (0.1, 2.0),
                  p: float = 0.5) -> np.ndarray:
  if rng.random() >= p:
    return img
  return blur(img, float(rng.uniform(*sigma_range)))


def cutmix_box(rng: np.random.Generator, h: int, w: int, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
               aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> np.ndarray:
  """bool[h, w] box to paste a partner image into; all False when not applied (probability 1 - p).

  Box area is U[area] of the image and its height/width ratio U[aspect]. An aspect that does not fit the
  image is redrawn (as UniMatch's rejection loop does); the position is uniform over the fitting ones.
  """
  box = np.zeros((h, w), bool)
  if rng.random() >= p:
    return box
  size = rng.uniform(*area) * h * w
  for _ in range(100):
    ratio = rng.uniform(*aspect)
    bh, bw = int(round(math.sqrt(size * ratio))), int(round(math.sqrt(size / ratio)))
    if bh <= h and bw <= w:
      break
  bh, bw = max(1, min(bh, h)), max(1, min(bw, w))
  y0 = int(rng.integers(0, h - bh + 1))
  x0 = int(rng.integers(0, w - bw + 1))
  box[y0:y0 + bh, x0:x0 + bw] = True
  return box


def strong_view(img: np.ndarray, rng: np.random.Generator, cfg: StrongAugConfig = StrongAugConfig()) -> np.ndarray:
  """One strong view of a uint8 image: jitter (p=0.8), grayscale (p=0.2), blur (p=0.5) by default."""
  if rng.random() < cfg.jitter_p:
    img = color_jitter(img, rng, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
  img = random_grayscale(img, rng, cfg.grayscale_p)
  return gaussian_blur(img, rng, cfg.blur_sigma, cfg.blur_p)


class UnlabeledTransform:
  """The pipeline's `extra_transform` for unlabeled crops (a class so it pickles into grain workers).

  Input: the weakly augmented crop with "raw_image" uint8[h,w,3], "image" float32 (normalized weak view)
  and "label" (padded pixels = 254). Adds two independent normalized strong views "image_s1"/"image_s2",
  their CutMix boxes "cutmix_box1"/"cutmix_box2" (bool[h,w]) and "ignore_mask" (bool[h,w], padding), and
  drops "raw_image" unless `keep_raw` (it need not go to devices). Padded pixels of the strong views copy the
  weak view: padding is not image content to augment.
  """

  def __init__(self, data_config: Any, semi_config: Any = None, *, keep_raw: bool = False):
    self.cfg = StrongAugConfig.from_config(semi_config)
    self.mean = tuple(float(m) for m in data_config.mean)
    self.std = tuple(float(s) for s in data_config.std)
    self.keep_raw = keep_raw

  def __call__(self, example: dict, rng: np.random.Generator) -> dict:
    missing = [k for k in ("raw_image", "label") if k not in example]
    if missing:
      raise ValueError(f"unlabeled transform: example lacks {missing}; it needs 'raw_image' (uint8 weak crop) "
                       f"and 'label' (254 at padding); found keys {sorted(example)}")
    raw = np.asarray(example["raw_image"])
    h, w = raw.shape[:2]
    mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
    ignore = np.asarray(example["label"]) == UNLABELED_PAD
    out = dict(example)
    if not self.keep_raw:
      out.pop("raw_image")
    out["ignore_mask"] = ignore
    for i in (1, 2):
      view = (strong_view(raw, rng, self.cfg).astype(np.float32) - mean) / std
      if "image" in example:
        view = np.where(ignore[..., None], np.asarray(example["image"], np.float32), view)
      out[f"image_s{i}"] = view.astype(np.float32)
      cfg = self.cfg
      out[f"cutmix_box{i}"] = cutmix_box(rng, h, w, cfg.cutmix_p, cfg.cutmix_area, cfg.cutmix_aspect)
    return out


def make_unlabeled_transform(data_config: Any, semi_config: Any = None, *, keep_raw: bool = False
                             ) -> Callable[[dict, np.random.Generator], dict]:
  """`UnlabeledTransform(data_config, semi_config)`: pass it as `train_iterator(..., extra_transform=)`.

  The standard train transform pads labels with `data_config.ignore_label`: build the unlabeled pipeline
  with a data config whose ignore_label is 254 so padding is recognisable here.
  """
  return UnlabeledTransform(data_config, semi_config, keep_raw=keep_raw)
