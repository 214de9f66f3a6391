"""The embedded default dataset: procedural street-like scenes generated in code, deterministic by seed.

Background class 0 plus shapes of several classes, each class with its own colour distribution and texture, so
a segmenter must learn appearance and not only position. No files: items are generated on the fly (~4 ms at
64x64), which makes it the dataset of tests, smoke runs and the README's first command.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from maskseg_jax.data.source_base import Source
from maskseg_jax.errors import ConfigError


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
  i = int(h * 6) % 6
  f = h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return np.array(rgb, np.float32) * 255.0


class SyntheticSource(Source):
  """Procedural scenes: textured shapes of `num_classes - 1` classes on a background (class 0).

  Each class has its own colour distribution, texture (noise, stripes, checks, dots, gradient) and preferred
  shape, but shapes are mixed in, placed at random and occlude each other, so a segmenter has to learn
  appearance rather than outline. Items are a pure function of (seed, split, index): nothing is stored.
  """

  name = "synthetic"
  SHAPES = ("rectangle", "ellipse", "triangle", "stripe", "ring", "blob")
  TEXTURES = ("noise", "stripes", "checker", "dots", "gradient")

  def __init__(self, num_items: int, image_size: Sequence[int] = (64, 64), num_classes: int = 6, *,
               seed: int = 1234, split: str = "train", ignore_label: int = 255):
    if num_classes < 2:
      raise ConfigError(f"synthetic data needs data.num_classes >= 2, got {num_classes}")
    if num_items < 1:
      raise ConfigError(f"synthetic split {split!r} has {num_items} items; expected at least 1")
    self.num_items = int(num_items)
    self.image_size = (int(image_size[0]), int(image_size[1]))
    self.num_classes = int(num_classes)
    self.class_names = ("background",) + tuple(f"shape_{k}" for k in range(1, num_classes))
    self.ignore_label = int(ignore_label)
    self.seed = int(seed)
    self.split = split
    self._split_code = zlib.crc32(split.encode())
    crng = np.random.default_rng([self.seed, 0x5EED])
    self._classes = []
    for k in range(1, num_classes):
      hue = ((k - 1) / (num_classes - 1) + crng.uniform(-0.03, 0.03)) % 1.0
      self._classes.append(dict(
          color=_hsv_to_rgb(hue, crng.uniform(0.55, 0.9), crng.uniform(0.55, 0.95)),
          texture=self.TEXTURES[(k - 1) % len(self.TEXTURES)],
          shape=self.SHAPES[(k - 1) % len(self.SHAPES)],
          angle=crng.uniform(0, np.pi),
          period=crng.uniform(3.0, 7.0),
          amp=crng.uniform(25.0, 45.0)))

  @classmethod
  def from_config(cls, data_config, split: str) -> SyntheticSource:
    s = data_config.synthetic
    n = s.num_train if split == "train" else s.num_val if split in ("val", "test") else None
    if n is None:
      raise ConfigError(f"synthetic data has splits 'train' and 'val' (optionally sliced, 'train[:32]'); "
                        f"got {split!r}")
    return cls(n, s.image_size, data_config.num_classes, seed=s.seed, split=split,
               ignore_label=data_config.ignore_label)

  def __len__(self) -> int:
    return self.num_items

  def id_of(self, index: int) -> str:
    return f"synthetic_{self.split}_{self._index(index):06d}"

  def _texture(self, spec: dict, color: np.ndarray, yy: np.ndarray, xx: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    h, w = yy.shape
    kind, a, amp, period = spec["texture"], spec["angle"], spec["amp"], spec["period"]
    u = xx * np.cos(a) + yy * np.sin(a)
    if kind == "noise":
      t = rng.normal(0.0, amp * 0.6, (h, w, 1))
    elif kind == "stripes":
      t = amp * np.sign(np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)))[..., None]
    elif kind == "checker":
      p = max(2, int(period))
      t = amp * (((yy.astype(int) // p + xx.astype(int) // p) % 2) * 2 - 1)[..., None]
    elif kind == "dots":
      p = period + 2
      d = np.hypot((yy % p) - p / 2, (xx % p) - p / 2)
      t = -1.5 * amp * (d < p / 4)[..., None]
    else:  # gradient
      t = amp * (u / max(h, w) * 2 - 1)[..., None]
    return color + t + rng.normal(0.0, 4.0, (h, w, 1))

  @staticmethod
  def _mask(shape: str, yy, xx, cy, cx, ry, rx, angle, rng) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    if shape == "rectangle":
      return (np.abs(u) < rx) & (np.abs(v) < ry)
    if shape == "ellipse":
      return (u / rx) ** 2 + (v / ry) ** 2 < 1.0
    if shape == "triangle":
      ang = angle + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
      py, px = cy + ry * np.sin(ang), cx + rx * np.cos(ang)
      signs = []
      for i in range(3):
        j = (i + 1) % 3
        signs.append((px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i]))
      return ((signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)) | ((signs[0] <= 0) & (signs[1] <= 0)
                                                                      & (signs[2] <= 0))
    if shape == "stripe":
      return np.abs(v) < max(1.5, ry * 0.35)
    if shape == "ring":
      r = (u / rx) ** 2 + (v / ry) ** 2
      return (r < 1.0) & (r > 0.3)
    theta = np.arctan2(v, u)  # blob: a wobbly disc
    rad = 1.0 + 0.3 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.15 * np.sin(5 * theta + rng.uniform(0, 6.3))
    return np.hypot(u / rx, v / ry) < rad

  def _load(self, index: int) -> dict[str, Any]:
    rng = np.random.default_rng([self.seed, self._split_code, index])
    h, w = self.image_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.7))
    tilt = rng.uniform(-30, 30, 3) * ((yy / h)[..., None] - 0.5) + rng.uniform(-30, 30, 3) * (
        (xx / w)[..., None] - 0.5)
    image = bg + tilt + rng.normal(0.0, 8.0, (h, w, 1))
    label = np.zeros((h, w), np.uint8)
    size = min(h, w)
    for _ in range(int(rng.integers(2, 7))):
      k = int(rng.integers(1, self.num_classes))
      spec = self._classes[k - 1]
      shape = spec["shape"] if rng.random() < 0.7 else self.SHAPES[int(rng.integers(len(self.SHAPES)))]
      mask = self._mask(shape, yy, xx, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.12, 0.35) * size,
                        rng.uniform(0.12, 0.35) * size, rng.uniform(0, np.pi), rng)
      color = spec["color"] + rng.normal(0.0, 12.0, 3)
      tex = self._texture(spec, color, yy, xx, rng)
      image = np.where(mask[..., None], tex, image)
      label[mask] = k
    image = np.clip(image * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
    return {"image": image, "label": label, "id": self.id_of(index)}

