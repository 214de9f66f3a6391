"""Pure numpy picture helpers: colour label maps, tile rows of pictures into one grid, titles and a legend."""

from __future__ import annotations

import numpy as np


def palette(num_colors: int = 256) -> np.ndarray:
  """The PASCAL VOC colour map (bit-interleaved), uint8[num_colors, 3]; index 255 is drawn white (pictures
  also draw 254, the unknown marker, in `UNKNOWN_COLOR`)."""
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


def colorize(label: np.ndarray, colors=None) -> np.ndarray:
  """uint8[H, W] class ids -> uint8[H, W, 3] colours (`colors`: uint8[256, 3], default the palette)."""
  pal = _PALETTE if colors is None else np.asarray(colors, np.uint8)
  return pal[np.asarray(label).astype(np.int64) % 256]


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


# Label values that are no class: drawn in fixed colours so every picture's legend can name them.
VOID = 255      # data.ignore_label's default: unlabelled pixels
UNKNOWN = 254   # L-MAE's lmae.unknown_value default: pixels a completion must fill
VOID_COLOR = (255, 255, 255)
UNKNOWN_COLOR = (255, 0, 255)
MASKED_COLOR = (60, 60, 60)     # L-MAE pictures: a masked patch shows the dimmed image (drawn as dark grey)
SELECTED_COLOR = (255, 0, 0)    # selective masking: a selected tile is tinted red
_PALETTE[UNKNOWN] = UNKNOWN_COLOR
_PALETTE[VOID] = VOID_COLOR


def class_legend(num_classes: int, class_names=None, *, void: bool = True, unknown: bool = False,
                 masked: bool = False, colors=None) -> list[tuple[str, tuple[int, int, int]]]:
  """(name, colour) legend entries: every class, then void (255), the unknown marker (254) and the L-MAE
  masked-patch shade when asked for. `colors`: uint8[256, 3] to use instead of the default palette."""
  pal = _PALETTE if colors is None else np.asarray(colors, np.uint8)
  names = list(class_names) if class_names else [f"class {i}" for i in range(num_classes)]
  entries = [(str(names[i]), tuple(int(v) for v in pal[i])) for i in range(num_classes)]
  if void:
    entries.append(("void", tuple(int(v) for v in pal[VOID])))
  if unknown:
    entries.append(("unknown", tuple(int(v) for v in pal[UNKNOWN])))
  if masked:
    entries.append(("masked", MASKED_COLOR))
  return entries


def _text(draw, xy, text: str, fill=(0, 0, 0)) -> None:
  from PIL import ImageFont
  draw.text(xy, text, fill=fill, font=ImageFont.load_default())


LEGEND_CELL = 90  # pixels per legend entry (swatch + up to 12 characters)


def with_legend(picture: np.ndarray, entries, *, titles=(), pad: int = 2) -> np.ndarray:
  """`picture` (a `grid`) with column titles above it and a legend (colour swatch + name per entry of
  `class_legend` or any (name, rgb) list) below it."""
  from PIL import Image, ImageDraw
  entries = list(entries)
  h, w = picture.shape[:2]
  title_h, row_h, swatch = (12 if titles else 0), 12, 10
  per_row = max(1, w // LEGEND_CELL)
  legend_rows = -(-len(entries) // per_row)
  width = max(w, min(len(entries), per_row) * LEGEND_CELL + pad)
  canvas = Image.new("RGB", (width, title_h + h + legend_rows * row_h + pad), (255, 255, 255))
  canvas.paste(Image.fromarray(np.asarray(picture, np.uint8)), (0, title_h))
  draw = ImageDraw.Draw(canvas)
  if titles:
    col_w = (w - pad) / len(titles)
    for i, t in enumerate(titles):
      _text(draw, (int(pad + i * col_w), 0), t)
  for i, (name, color) in enumerate(entries):
    x = (i % per_row) * LEGEND_CELL + pad
    y = title_h + h + (i // per_row) * row_h + 1
    draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in color), outline=(0, 0, 0))
    _text(draw, (x + swatch + 3, y - 1), str(name)[:12])
  return np.asarray(canvas)
