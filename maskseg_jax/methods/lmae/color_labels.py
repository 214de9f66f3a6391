"""Colour-coded (RGB) label files: a palette file says which colour is which label value, so RGB masks are
completed as class ids and written back in the same colours (`maskseg-complete --palette=FILE`).

Palette files (one colour per label value; void 255 and the unknown marker 254 may have colours too):
  .json  {"0": [128, 64, 128], "1": [244, 35, 232], "255": [0, 0, 0]}, or {"0": {"color": [128, 64, 128],
         "name": "road"}, ...}
  .txt   one `id r g b [name]` per line (spaces or commas; `#` starts a comment), or a CVAT / labelmap.txt
         `name:r,g,b::` per line, whose ids are the line order (0, 1, ...)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from maskseg_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class ColorPalette:
  path: str
  colors: dict[tuple[int, int, int], int]   # colour -> label value
  names: dict[int, str]                     # label value -> name (where the file names it)

  @property
  def by_value(self) -> dict[int, tuple[int, int, int]]:
    return {v: c for c, v in self.colors.items()}

  def color_table(self, base: np.ndarray) -> np.ndarray:
    """uint8[256, 3]: `base` with every value the palette colours set to its colour (for previews)."""
    table = np.array(base, np.uint8)
    for value, color in self.by_value.items():
      table[value] = color
    return table


def _bad(path: str, where: str, what: str) -> DataError:
  return DataError(f"palette {path} {where}: {what}")


def _value(path: str, where: str, text) -> int:
  try:
    v = int(text)
  except (TypeError, ValueError):
    raise _bad(path, where, f"label value {text!r} is not an integer; expected 0..255") from None
  if not 0 <= v <= 255:
    raise _bad(path, where, f"label value {v} is outside 0..255")
  return v


def _color(path: str, where: str, rgb) -> tuple[int, int, int]:
  if isinstance(rgb, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", rgb.strip()):
    h = rgb.strip().lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
  try:
    color = tuple(int(c) for c in rgb)
  except (TypeError, ValueError):
    color = ()
  if len(color) != 3 or not all(0 <= c <= 255 for c in color):
    raise _bad(path, where, f"colour {rgb!r} is not three values 0..255 (or '#rrggbb')")
  return color


def _json_entries(path: str, text: str) -> list[tuple[str, int, tuple[int, int, int], str | None]]:
  try:
    data = json.loads(text)
  except ValueError as e:
    raise _bad(path, "", f"is not valid JSON ({e})") from None
  if not isinstance(data, dict):
    raise _bad(path, "", f"holds a JSON {type(data).__name__}; expected an object {{\"<id>\": [r, g, b]}}")
  out = []
  for key, spec in data.items():
    where = f"entry {key!r}"
    name = None
    if isinstance(spec, dict):
      name, spec = spec.get("name"), spec.get("color")
    out.append((where, _value(path, where, key), _color(path, where, spec), name))
  return out


def _txt_entries(path: str, text: str) -> list[tuple[str, int, tuple[int, int, int], str | None]]:
  out = []
  rows = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]
  rows = [(n, line) for n, line in rows if line]
  for i, (n, line) in enumerate(rows):
    where = f"line {n}"
    if ":" in line:  # CVAT labelmap: name:r,g,b:parts:actions, ids in line order
      name, rgb = line.split(":")[:2]
      out.append((where, i, _color(path, where, rgb.split(",")), name.strip()))
      continue
    fields = [f for f in re.split(r"[,\s]+", line) if f]
    if len(fields) < 4:
      raise _bad(path, where, f"{line!r} has {len(fields)} fields; expected `id r g b [name]` or `name:r,g,b::`")
    out.append((where, _value(path, where, fields[0]), _color(path, where, fields[1:4]),
                " ".join(fields[4:]) or None))
  return out


def load_palette(path: str) -> ColorPalette:
  """Reads a .json or .txt palette file (formats in the module docstring); DataError naming the line at fault."""
  if not os.path.isfile(path):
    raise DataError(f"palette file {path} not found; expected a .json or .txt file of colour -> class id")
  with open(path) as f:
    text = f.read()
  entries = _json_entries(path, text) if path.lower().endswith(".json") else _txt_entries(path, text)
  if not entries:
    raise _bad(path, "", "lists no colour")
  colors, names, seen = {}, {}, {}
  for where, value, color, name in entries:
    if color in colors and colors[color] != value:
      raise _bad(path, where, f"colour {color} is already label value {colors[color]}; one colour per value")
    if value in seen and seen[value] != color:
      raise _bad(path, where, f"label value {value} already has colour {seen[value]}; one colour per value")
    colors[color], seen[value] = value, color
    if name:
      names[value] = name
  return ColorPalette(path=path, colors=colors, names=names)


def _codes(rgb: np.ndarray) -> np.ndarray:
  rgb = np.asarray(rgb, np.uint32)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def decode(rgb: np.ndarray, palette: ColorPalette, name: str) -> np.ndarray:
  """uint8[H,W,3] colours -> uint8[H,W] label values; a colour the palette lacks is a DataError naming the file,
  the colour and the palette."""
  codes, inverse = np.unique(_codes(rgb), return_inverse=True)
  lut = np.empty(len(codes), np.uint8)
  for i, code in enumerate(codes):
    color = (int(code) >> 16, (int(code) >> 8) & 255, int(code) & 255)
    if color not in palette.colors:
      count = int(np.sum(inverse == i))
      raise DataError(f"label {name} has colour {color} ({count} pixels), which palette {palette.path} does not "
                      f"list; expected one of its {len(palette.colors)} colours (add `<id> {color[0]} "
                      f"{color[1]} {color[2]}` for it)")
    lut[i] = palette.colors[color]
  return lut[inverse.reshape(rgb.shape[:2])]


def encode(label: np.ndarray, palette: ColorPalette, name: str) -> np.ndarray:
  """uint8[H,W] label values -> uint8[H,W,3] colours; a value the palette gives no colour is a DataError."""
  by_value = palette.by_value
  values = np.unique(label)
  missing = [int(v) for v in values if int(v) not in by_value]
  if missing:
    raise DataError(f"completed label {name} holds label value {missing[0]}, which palette {palette.path} gives "
                    f"no colour; add `{missing[0]} r g b` for it (every class the model can predict needs one)")
  table = np.zeros((256, 3), np.uint8)
  for value, color in by_value.items():
    table[value] = color
  return table[np.asarray(label, np.uint8)]
