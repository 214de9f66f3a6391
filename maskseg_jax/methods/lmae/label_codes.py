"""What the values of an incomplete label mean (classes, void, the unknown marker) and, per `--missing` choice,
which pixels a completion may replace: the label-reading half of the completion protocol (`completion.py`)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from maskseg_jax.errors import ConfigError, DataError


DEFAULT_UNKNOWN = 254


DEFAULT_IGNORE = 255


@dataclasses.dataclass(frozen=True)
class Codes:
  """What the values of a label mean. num_classes None (fills without a model): every other value is a class."""
  num_classes: int | None
  background_classes: tuple[int, ...] = ()
  ignore_label: int = DEFAULT_IGNORE
  unknown_value: int = DEFAULT_UNKNOWN

  def classes(self, label: np.ndarray) -> np.ndarray:
    """bool[H,W]: pixels holding a class id."""
    if self.num_classes is None:
      return (label != self.ignore_label) & (label != self.unknown_value)
    return (label < self.num_classes) & (label != self.unknown_value)

  def background(self, label: np.ndarray) -> np.ndarray:
    return np.isin(label, self.background_classes) & self.classes(label)


def check_codes(codes: Codes) -> None:
  """The unknown marker must be a label value that is not a class id."""
  u, n = codes.unknown_value, codes.num_classes
  if not 0 <= u <= 255:
    raise ConfigError(f"unknown_value={u} is not an 8-bit label value; expected 0..255 outside the class ids "
                      f"(default {DEFAULT_UNKNOWN})")
  if n is not None and u < n:
    raise ConfigError(f"unknown_value={u} is class id {u} of the model's 0..{n - 1}; expected a value that is "
                      f"no class, e.g. --unknown_value={DEFAULT_UNKNOWN}")


def check_values(label: np.ndarray, codes: Codes, name: str) -> None:
  """DataError naming the file if a value is neither a class, void nor unknown."""
  if codes.num_classes is None:
    return
  bad = (label >= codes.num_classes) & (label != codes.ignore_label) & (label != codes.unknown_value)
  if not bad.any():
    return
  n, ignore, u = codes.num_classes, codes.ignore_label, codes.unknown_value
  if u == ignore:
    allowed = f"{ignore} (void, which --unknown_value={u} also makes the unknown marker)"
  else:
    allowed = f"{ignore} (void) or {u} (unknown)"
  hint = (f"; if {DEFAULT_UNKNOWN} marks unknown pixels, pass --unknown_value={DEFAULT_UNKNOWN}"
          if DEFAULT_UNKNOWN in np.unique(label[bad]) and u != DEFAULT_UNKNOWN else "")
  raise DataError(f"label {name} has values {np.unique(label[bad])[:10].tolist()}; expected class ids "
                  f"0..{n - 1}, {allowed}{hint}")


@dataclasses.dataclass(frozen=True)
class Missing:
  """One `--missing` choice: which pixels may be replaced, which force their patch masked, and whether the
  mask is exactly the forced patches (True) or Background-First up to the model's training budget (paper)."""
  fillable: Callable[[np.ndarray, Codes], np.ndarray]
  forced: Callable[[np.ndarray, Codes], np.ndarray]
  exact: bool


def _unknown(label, codes):
  return label == codes.unknown_value


def _unknown_or_void(label, codes):
  return (label == codes.unknown_value) | (label == codes.ignore_label)


def not_foreground(label, codes):
  return ~codes.classes(label) | codes.background(label)


MISSING: dict[str, Missing] = {
    "unknown_and_void": Missing(fillable=_unknown_or_void, forced=_unknown_or_void, exact=True),
    "unknown": Missing(fillable=_unknown, forced=_unknown, exact=True),
    "paper": Missing(fillable=not_foreground, forced=_unknown, exact=False),
}


DEFAULT_MISSING = "unknown_and_void"
