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


def _text(draw, xy, text: str, fill=(0, 0, 0)) -> None:
  from PIL import ImageFont
  draw.text(xy, text, fill=fill, font=ImageFont.load_default())


def with_legend(picture: np.ndarray, num_classes: int, class_names=None, *, titles=(), pad: int = 2) -> np.ndarray:
  """`picture` (a `grid`) with column titles above it and a class legend (colour swatch + name) below it."""
  from PIL import Image, ImageDraw
  names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
  h, w = picture.shape[:2]
  title_h, row_h, swatch = (12 if titles else 0), 12, 10
  per_row = max(1, w // 90)
  legend_rows = -(-len(names) // per_row)
  canvas = Image.new("RGB", (w, title_h + h + legend_rows * row_h + pad), (255, 255, 255))
  canvas.paste(Image.fromarray(np.asarray(picture, np.uint8)), (0, title_h))
  draw = ImageDraw.Draw(canvas)
  if titles:
    col_w = (w - pad) / len(titles)
    for i, t in enumerate(titles):
      _text(draw, (int(pad + i * col_w), 0), t)
  for i, name in enumerate(names):
    x = (i % per_row) * 90 + pad
    y = title_h + h + (i // per_row) * row_h + 1
    draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in _PALETTE[i]), outline=(0, 0, 0))
    _text(draw, (x + swatch + 3, y - 1), name[:12])
  return np.asarray(canvas)
