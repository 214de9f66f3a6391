"""The only place that writes metrics: JSONL, TensorBoard, progress lines (training steps, long evaluations),
the eval line and pictures.

Only process 0 writes (every process may call the methods). `metrics.jsonl` holds one JSON object per
call, `{"step": s, "split": "train"|"val"|..., **scalars}`, so results can be read back without TensorBoard.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from PIL import Image


# The eval line leads with each model's own figure: L-MAE's PA-mIoU, then global mIoU, then the rest.
HEADLINE_FIRST = ("pa_miou", "miou")


def headline_order(keys, evaluators=()) -> list[str]:
  """Eval keys in reading order: the model's figures (`val/pa_miou`, `val/miou`, other `val/x`) before the
  baselines' (`val/nearest/pa_miou`); within each, by evaluator (`evaluators`: names in the task's order, the
  first is the model's main split), then HEADLINE_FIRST, then name."""
  order = {name: i for i, name in enumerate(evaluators)}

  def rank(key: str):
    parts = key.split("/")
    metric = parts[-1]
    first = HEADLINE_FIRST.index(metric) if metric in HEADLINE_FIRST else len(HEADLINE_FIRST)
    return (len(parts), order.get(parts[0], len(order)), parts[0], parts[1:-1], first, metric)

  return sorted(keys, key=rank)


class EvalProgress:
  """`[eval val] 40/101 images, 12.3 img/s` at most every `every_s` seconds while an evaluation runs, and a
  last line at the end only if one was printed (short evaluations stay silent)."""

  def __init__(self, log, name: str, every_s: float):
    self.log, self.name, self.every_s = log, name, every_s
    self.start = self.last = time.perf_counter()
    self.printed = 0

  def __call__(self, done: int, total: int) -> None:
    now = time.perf_counter()
    end = done >= total
    if (now - self.last >= self.every_s and not end) or (end and self.printed):
      rate = done / max(now - self.start, 1e-9)
      self.log(f"[eval {self.name}] {done}/{total} images, {rate:.1f} img/s")
      self.last, self.printed = now, self.printed + 1


class MetricWriter:

  def __init__(self, workdir: str, *, total_steps: int = 0, enabled: bool | None = None, stream=None,
               eval_progress_s: float = 30.0):
    self.workdir = workdir
    self.eval_progress_s = eval_progress_s
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.total_steps = total_steps
    self.stream = stream or sys.stdout
    self._tb = None
    self._last_time = None
    self._last_step = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # event files readable by TensorBoard, no TensorFlow needed
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write_scalars(self, step: int, scalars: dict, split: str = "train") -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
    for k, v in clean.items():
      tag = k if "/" in k else f"{split}/{k}"
      self._tb.add_scalar(tag, v, int(step))
    self._tb.flush()

  def progress(self, step: int, scalars: dict, images_per_step: int) -> dict:
    """Prints `step, loss, images/s, ETA` and returns the throughput figures it computed."""
    now = time.perf_counter()
    rates = {}
    if self._last_time is not None and step > self._last_step:
      dt = now - self._last_time
      steps_per_s = (step - self._last_step) / dt
      rates = {"images_per_s": steps_per_s * images_per_step, "steps_per_s": steps_per_s}
    self._last_time, self._last_step = now, step
    if self.enabled:
      eta = ""
      if rates and self.total_steps:
        secs = max(self.total_steps - step, 0) / rates["steps_per_s"]
        eta = f"  eta {int(secs // 60)}m{int(secs % 60):02d}s"
      shown = "  ".join(f"{k} {float(v):.4g}" for k, v in scalars.items() if not k.startswith("lr"))
      ips = f"  {rates['images_per_s']:.1f} img/s" if rates else ""
      print(f"[step {step}/{self.total_steps}] {shown}{ips}{eta}", file=self.stream, flush=True)
    return rates

  def eval_progress(self, name: str) -> EvalProgress:
    """A progress callback `(images done, total)` for one evaluation named `name`."""
    return EvalProgress(self.log, name, self.eval_progress_s)

  def eval_line(self, step: int, scalars: dict, evaluators=()) -> str:
    """Prints and returns `[eval step s] val/pa_miou 0.61  val/miou 0.70 ...`: top-level figures and each
    baseline's mIoUs (`val/nearest/pa_miou`), not per-class IoUs, in `headline_order`."""
    shown = [k for k in scalars if k.count("/") == 1 or (k.count("/") == 2 and k.endswith("miou"))]
    line = f"[eval step {step}] " + "  ".join(f"{k} {scalars[k]:.4f}" for k in headline_order(shown, evaluators))
    self.log(line)
    return line

  def log(self, message: str) -> None:
    if self.enabled:
      print(message, file=self.stream, flush=True)

  def write_image(self, step: int, name: str, image: np.ndarray) -> str | None:
    """Writes an HxWx3 uint8 picture to `workdir/images/<name>_<step>.png` and TensorBoard."""
    if not self.enabled:
      return None
    folder = os.path.join(self.workdir, "images")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}_{int(step):07d}.png")
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    self._tb.add_image(name, np.asarray(image, np.uint8), int(step), dataformats="HWC")
    return path

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
