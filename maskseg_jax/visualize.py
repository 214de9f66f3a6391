"""Pure numpy picture helpers: colour label maps and tile rows of pictures into one grid."""

from __future__ import annotations

import numpy as np


def palette(num_colors: int = 256) -> np.ndarray:
  """The PASCAL VOC colour map (bit-interleaved), uint8[num_colors, 3]; index 255 is drawn white."""
  pal = np.zeros((num_colors, 3), np.uint8)
  for i in range(num_colors):
    c, r, g, b = i, 0, 0, 0
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    pal[i] = (r, g, b)
  if num_colors > 255:
    pal[255] = (255, 255, 255)
  return pal


_PALETTE = palette()


def colorize(label: np.ndarray) -> np.ndarray:
  """uint8[H, W] class ids -> uint8[H, W, 3] colours."""
  return _PALETTE[np.asarray(label).astype(np.int64) % 256]


def denormalize(image: np.ndarray, mean, std) -> np.ndarray:
  return np.clip(np.asarray(image, np.float32) * np.asarray(std) + np.asarray(mean), 0, 255).astype(np.uint8)


def grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tiles rows of equally sized HxWx3 (or HxW label) pictures into one uint8 image."""
  cells = [[colorize(c) if c.ndim == 2 else np.asarray(c, np.uint8) for c in row] for row in rows]
  h, w = cells[0][0].shape[:2]
  ncol = max(len(r) for r in cells)
  out = np.full((len(cells) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
  for i, row in enumerate(cells):
    for j, cell in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = cell
  return out
