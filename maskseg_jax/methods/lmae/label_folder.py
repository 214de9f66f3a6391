"""Completing a folder of label files: pairing, PNG read/write (palette, grayscale or colour codes kept), the
review files beside the outputs (`review.py`), staging so nothing is overwritten or left half-written,
interruption clean-up, and `config.mode=complete`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import tempfile
import threading
from typing import Callable, Sequence

import jax
import numpy as np
from PIL import Image

from maskseg_jax.data import sources
from maskseg_jax.data import file_layouts
from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.methods.lmae.completion import (DEFAULT_IGNORE, DEFAULT_MISSING, DEFAULT_UNKNOWN, MISSING, SCALES,
                                               Completer, make_completer)
from maskseg_jax.methods.lmae.completion_methods import DEFAULT_METHOD, METHODS, MODEL_METHODS, pair_completer
from maskseg_jax.methods.lmae import color_labels, review
from maskseg_jax.methods.lmae.runs import parse_model_spec, read_run_config, resolve_models


PARTIAL_PREFIX = ".maskseg_partial_"


# --- folders ----------------------------------------------------------------------------------------------
def _stem(f: str) -> str:
  return os.path.splitext(f)[0]


def pair_files(images_dir: str, labels_dir: str) -> list[tuple[str, str, str]]:
  """(image path, label path, stem) for every image; DataError naming any image without a label or vice versa."""
  for what, d in (("images", images_dir), ("labels", labels_dir)):
    if not os.path.isdir(d):
      raise DataError(f"{what} folder {d} not found")
  images = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(file_layouts.IMAGE_EXTS))
  labels = {_stem(f): f for f in os.listdir(labels_dir) if f.lower().endswith(".png")}
  stems = [_stem(f) for f in images]
  dup = sorted({s for s in stems if stems.count(s) > 1})
  if dup:
    raise DataError(f"{images_dir} has several images named {dup[0]}.* ; expected one image per stem")
  for f in images:
    if _stem(f) not in labels:
      raise DataError(f"image {os.path.join(images_dir, f)} has no label {_stem(f)}.png in {labels_dir}")
  orphans = sorted(set(labels) - set(stems))
  if orphans:
    raise DataError(f"label {os.path.join(labels_dir, labels[orphans[0]])} has no image in {images_dir} "
                    f"({len(orphans)} labels without an image)")
  if not images:
    raise DataError(f"{images_dir} holds no .jpg/.jpeg/.png image")
  return [(os.path.join(images_dir, f), os.path.join(labels_dir, labels[_stem(f)]), _stem(f)) for f in images]


@dataclasses.dataclass(frozen=True)
class LabelEncoding:
  """How a label file stores its values, so the completed label is written back the same way."""
  mode: str                                   # "P" (palette indices), "L" (grayscale) or "RGB" (colour codes)
  palette: list[int] | None = None            # mode P: the file's palette
  info: dict = dataclasses.field(default_factory=dict)  # PNG info to keep, such as transparency
  colors: color_labels.ColorPalette | None = None       # mode RGB: the --palette file

  def color_table(self) -> np.ndarray | None:
    """uint8[k, 3] colours of label values 0..k-1 as the file shows them (None: the default palette)."""
    if self.palette is not None:
      return np.asarray(self.palette, np.uint8).reshape(-1, 3)
    if self.colors is not None:
      return self.colors.color_table(review.default_colors())
    return None


def read_label_png(path: str, colors: color_labels.ColorPalette | None = None) -> tuple[np.ndarray, LabelEncoding]:
  """(uint8 label values, how the file encodes them). RGB files need `colors` (a `--palette` file)."""
  try:
    with Image.open(path) as im:
      mode = im.mode
      rgb = np.asarray(im.convert("RGB")) if mode in ("RGB", "RGBA") and colors is not None else None
      palette = im.getpalette() if mode == "P" else None
      info = {k: im.info[k] for k in ("transparency",) if k in im.info}
  except (OSError, ValueError):  # unreadable or truncated: the label reader's error names the file and the fix
    sources.read_label(path)
    raise
  if mode in ("RGB", "RGBA"):
    if colors is None:
      raise DataError(f"label {path} has pixel mode {mode!r} (a colour PNG); pass --palette=FILE mapping its "
                      "colours to class ids (a .json or .txt file, see maskseg-complete --help), or save it as "
                      "class ids")
    return color_labels.decode(rgb, colors, path), LabelEncoding("RGB", colors=colors)
  return sources.read_label(path), LabelEncoding("P" if palette is not None else "L", palette, info)


def write_label_png(path: str, label: np.ndarray, encoding: LabelEncoding) -> None:
  """Writes label values as the input stored them: palette PNG with its palette, grayscale, or colours."""
  label = np.ascontiguousarray(label, np.uint8)
  if encoding.mode == "RGB":
    im = Image.fromarray(color_labels.encode(label, encoding.colors, path), "RGB")
  elif encoding.palette is not None:
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    im.putpalette(encoding.palette)
  else:
    im = Image.fromarray(label)
  im.save(path, **encoding.info)


@dataclasses.dataclass
class FileReport:
  name: str
  out_path: str
  changed_pixels: int
  method: str                    # model | hybrid | nearest | geodesic
  ratio: float | None            # routed ratio of the model used (None: a fill)
  masked_fraction: float | None  # largest fraction of patches masked in one tile (None: a fill)
  background_proportion: float   # pixels that are no foreground class (void, unknown, background classes)
  tiles: int                     # model inputs run for this file
  fill_fraction: float | None = None       # hybrid: missing pixels that took the fill (near a given pixel)
  radius: float | None = None              # hybrid: the radius used, file pixels
  prefilled_fraction: float | None = None  # --min_missing > 0: missing pixels of unmasked patches (the fill's)
  hole_routes: dict | None = None          # auto: share of the missing pixels per hole route (thin/object/blob)
  mean_confidence: float | None = None     # model/hybrid: mean softmax probability of the pixels the model filled
  preview: str | None = None               # its review picture (OUT/review/<stem>.png), None with review off
  file_pixels: int = 0                     # height x width of the label

  def as_row(self) -> dict:
    """The report of this file as `review/<stem>.json` stores it: pixels filled (and their share of the file),
    method, mean confidence, then the routing details."""
    row = dataclasses.asdict(self)
    row["filled_pixels"] = row.pop("changed_pixels")
    row["filled_fraction"] = row["filled_pixels"] / max(row["file_pixels"], 1)
    return row


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_out_dir(out_dir: str, images_dir: str, labels_dir: str) -> None:
  """The output must be a folder (new or existing) outside both input folders."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise DataError(f"output {out_dir} is an existing file; expected a folder (new, or holding none of the "
                    "output names)")
  for what, folder in (("labels", labels_dir), ("images", images_dir)):
    if os.path.realpath(out_dir) == os.path.realpath(folder):
      raise DataError(f"output folder {out_dir} is an input folder ({what}); expected a new folder (inputs are "
                      "never overwritten)")
    if _inside(out_dir, folder):
      raise DataError(f"output folder {out_dir} is inside the {what} folder {folder}; expected a folder outside "
                      "the inputs (a later run would read the completed labels as inputs)")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


def remove_stale_partials(out_dir: str, log: Callable[[str], None] = print) -> list[str]:
  """Removes `.maskseg_partial_<pid>_*` folders whose process is gone (a completion killed with SIGKILL or a
  crash); folders of a live completion are left alone. Names without a pid (older versions) count as stale."""
  removed = []
  if not os.path.isdir(out_dir):
    return removed
  for entry in sorted(os.listdir(out_dir)):
    path = os.path.join(out_dir, entry)
    if not entry.startswith(PARTIAL_PREFIX) or not os.path.isdir(path):
      continue
    m = re.match(re.escape(PARTIAL_PREFIX) + r"(\d+)_", entry)
    if m and _pid_alive(int(m.group(1))):
      continue
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
    log(f"removed {path}, left by an interrupted completion (its outputs were never moved into place)")
  return removed


class Terminated(KeyboardInterrupt):
  """SIGTERM during a completion, raised like Ctrl-C so every `finally` (the staging clean-up) runs."""


@contextlib.contextmanager
def terminate_as_interrupt():
  """While active (main thread only), SIGTERM raises `Terminated` instead of killing the process outright."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    raise Terminated(f"signal {signum}")

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _describe(r: FileReport) -> str:
  if r.method not in MODEL_METHODS:
    how = r.method
  elif r.tiles == 0:
    how = "nothing to fill"
  else:
    how = (f"{r.method} ratio {r.ratio:g}, {r.masked_fraction:.0%} of patches masked, {r.tiles} "
           f"tile{'s' if r.tiles != 1 else ''}")
  conf = f", mean confidence {r.mean_confidence:.2f}" if r.mean_confidence is not None else ""
  return f"{r.name}: {r.changed_pixels} pixels changed ({how}{conf})"


def fill_class_count(model) -> int:
  """The class count of a `--model` spec (a Completer or a run folder), read without loading weights."""
  if isinstance(model, Completer):
    return model.num_classes
  return int(read_run_config(parse_model_spec(model)[1]).data.num_classes)


def complete_folder(images_dir: str, labels_dir: str, out_dir: str, models: Sequence = (), *,
                    method: str = DEFAULT_METHOD, missing: str = DEFAULT_MISSING, scale: str = "train",
                    checkpoint: str = "latest", unknown_value: int | None = None, radius: float = 0.0,
                    min_missing: float | None = None, num_classes: int | None = None, palette: str = "",
                    write_review: bool = True, log: Callable[[str], None] = print) -> list[FileReport]:
  """Completes every label of `labels_dir` into `out_dir`; returns one report per file.

  models: Completers, or trained workdirs as 'WORKDIR', 'RATIO=WORKDIR' or (ratio, workdir) pairs (the model
  methods; a fill takes only the class count from the first). num_classes: the class count a fill checks
  label values against (default: the first model's). palette: a colour -> class id file for RGB labels
  (`color_labels`), written back in the same colours. write_review: a preview and a report per file in
  `out_dir/review/` (`review.py`). Nothing is written unless every output name is free and every pair
  succeeds; no input file is ever written.
  """
  for what, value, allowed in (("method", method, METHODS), ("missing", missing, tuple(MISSING)),
                               ("scale", scale, tuple(SCALES))):
    if value not in allowed:
      raise ConfigError(f"--{what}={value!r} is unknown; expected one of {', '.join(allowed)}")
  if method in MODEL_METHODS and not models:
    raise ConfigError(f"--method={method} needs a trained L-MAE: pass --model=RUN (or --method=nearest|geodesic, "
                      "which need no model)")
  if method not in ("model", "auto") and not MISSING[missing].exact:
    raise ConfigError(f"--missing={missing} masks patches at a model's ratio; --method={method} needs "
                      "--missing=unknown or unknown_and_void (or use --method=model)")
  check_out_dir(out_dir, images_dir, labels_dir)
  colors = color_labels.load_palette(palette) if palette else None
  pairs = pair_files(images_dir, labels_dir)
  outputs = [os.path.join(out_dir, os.path.basename(lp)) for _, lp, _ in pairs]
  reviews = [review.review_paths(out_dir, stem) for _, _, stem in pairs] if write_review else []
  for path in outputs + [p for pair in reviews for p in pair]:
    if os.path.exists(path):
      raise DataError(f"output file {path} already exists; refusing to overwrite it (choose a new output "
                      "folder)")
  completers = resolve_models(models, checkpoint, log) if method in MODEL_METHODS else ()
  if method not in MODEL_METHODS and num_classes is None and models:
    num_classes = fill_class_count(models[0])
    log(f"note: --method={method} uses no model; checking label values against the {num_classes} classes of "
        f"--model's run")
  run = pair_completer(method, completers, missing=missing, scale=scale, unknown_value=unknown_value,
                       radius=radius, min_missing=min_missing, num_classes=num_classes)
  codes = completers[0].codes(unknown_value) if completers else None
  shown_unknown = codes.unknown_value if codes else (DEFAULT_UNKNOWN if unknown_value is None else unknown_value)
  shown_void = codes.ignore_label if codes else DEFAULT_IGNORE
  remove_stale_partials(out_dir, log)
  created = not os.path.isdir(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  # Outputs go to a scratch folder first and move into place only when every pair succeeded, so a bad pair
  # met halfway leaves no partial result behind (and a rerun into the same folder is not refused).
  staging = tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{os.getpid()}_", dir=out_dir)
  staged = []  # (staging path, final path) of every file written
  reports, over = [], []
  try:
    with terminate_as_interrupt():
      for (image_path, label_path, stem), out_path in zip(pairs, outputs):
        image = sources.read_image(image_path)
        label, encoding = read_label_png(label_path, colors)
        if label.shape != image.shape[:2]:
          raise DataError(f"label {label_path} is {label.shape[0]}x{label.shape[1]} but image {image_path} is "
                          f"{image.shape[0]}x{image.shape[1]}; expected the same size")
        out, fields = run(image, label, name=label_path)
        confidence = fields.pop("confidence_map", None)
        staged.append((os.path.join(staging, os.path.basename(out_path)), out_path))
        write_label_png(staged[-1][0], out, encoding)
        report = FileReport(name=os.path.basename(label_path), out_path=out_path, file_pixels=int(label.size),
                            mean_confidence=review.mean_confidence(confidence, out != label), **fields)
        if write_review:
          report.preview = review.review_paths(out_dir, stem)[0]
          picture = review.preview(image, label, out, colors=encoding.color_table(),
                                   names=colors.names if colors else None, unknown_value=shown_unknown,
                                   ignore_label=shown_void)
          files = review.write_review(staging, stem, picture, report.as_row())
          staged += list(zip(files, review.review_paths(out_dir, stem)))
        log(_describe(report))
        reports.append(report)
        if method in ("model", "auto") and report.tiles:
          trained = max(c.train_ratio for c in completers if c.ratio == report.ratio)
          if report.masked_fraction > trained + 1e-9:
            over.append((report.name, report.masked_fraction, trained))
      for src, dst in staged:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
      if write_review:
        review.write_report_csv(os.path.join(out_dir, review.REVIEW_DIR))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if created and not os.listdir(out_dir):  # a failed run leaves no trace (a folder it made, still empty)
      os.rmdir(out_dir)
  if over:
    worst = max(over, key=lambda o: o[1])
    log(f"warning: {len(over)} files needed more patches masked than their model was trained at (most: "
        f"{worst[0]}, {worst[1]:.0%} masked by a ratio-{worst[2]:g} model): "
        f"{', '.join(o[0] for o in over[:5])}{' ...' if len(over) > 5 else ''}; train a higher-ratio model")
  log(f"wrote {len(reports)} completed labels to {out_dir}" + (
      f"; previews and report.csv in {os.path.join(out_dir, review.REVIEW_DIR)}" if write_review else ""))
  return reports


def complete_from_config(config, mdef, state) -> dict:
  """`config.mode=complete`: this run's model (plus `lmae.complete_models`) on the `lmae.complete_*` folders.

  `lmae.complete_missing` / `complete_scale`, where the config has them, pick `--missing` / `--scale`.
  """
  lc = config.lmae
  missing = [f"lmae.{k}" for k in ("complete_images", "complete_labels", "complete_out") if not lc[k]]
  if missing:
    raise ConfigError(f"config.mode=complete needs {', '.join(missing)} (folders of images, labels and a new "
                      "output folder)")
  if jax.process_count() > 1:
    raise ConfigError("config.mode=complete runs in one process (every process would write the same files); "
                      "use maskseg-complete --model=<workdir> on one host")
  own = make_completer(config, mdef, state["params"], state["batch_stats"], name="this run")
  reports = complete_folder(lc.complete_images, lc.complete_labels, lc.complete_out,
                            [own, *lc.complete_models], checkpoint=lc.complete_checkpoint,
                            missing=lc.get("complete_missing", DEFAULT_MISSING),
                            scale=lc.get("complete_scale", "train"), palette=lc.get("complete_palette", ""))
  return {"complete/files": float(len(reports)),
          "complete/changed_pixels": float(sum(r.changed_pixels for r in reports))}
