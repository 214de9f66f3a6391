"""The only place that writes metrics: JSONL, TensorBoard, progress lines and pictures.

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


class MetricWriter:

  def __init__(self, workdir: str, *, total_steps: int = 0, enabled: bool | None = None, stream=None):
    self.workdir = workdir
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
