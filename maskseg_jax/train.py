"""The one training loop: mesh, method task, restore, jitted steps, evaluation, checkpoints, logging.

Every method (supervised, L-MAE, semi-supervised, selective-masking stages) runs through `run`. The train
step is the method's pure function, compiled once with the state donated, the batch sharded over the
`data` mesh axis and the state replicated. RNG: one key per step, `fold_in(PRNGKey(seed), step)`, so a
resumed run draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import checkpointing, config_checks, sharding, weight_average
from maskseg_jax.errors import ConfigError, MasksegError
from maskseg_jax.methods import get_method
from maskseg_jax.metric_writer import MetricWriter


class NonFiniteLossError(MasksegError, FloatingPointError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class _StopFlag:
  """Set by SIGTERM (preemption) or a first Ctrl-C (SIGINT): the loop saves a checkpoint and returns at the next
  step boundary. A second Ctrl-C interrupts at once (nothing saved beyond the last checkpoint)."""

  SIGNALS = {signal.SIGTERM: "SIGTERM (preemption)", signal.SIGINT: "Ctrl-C (SIGINT)"}

  def __init__(self):
    self.stop = False
    self.reason = ""
    self._old = {}

  def __enter__(self):
    for signum in self.SIGNALS:
      try:
        self._old[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: no handler, nothing to restore
        pass
    return self

  def _handle(self, signum, frame):
    if signum == signal.SIGINT:
      if self.stop:  # the second Ctrl-C: the user does not want to wait for the save
        raise KeyboardInterrupt
      print("Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C again quits without saving)",
            file=sys.stderr, flush=True)
    self.stop, self.reason = True, self.SIGNALS[signum]

  def agree(self) -> None:
    """Multi-process: stop everywhere if any process was signalled, so all save the same step together."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      if np.max(multihost_utils.process_allgather(np.int32(self.stop))) and not self.stop:
        self.stop, self.reason = True, "a signal on another process"

  def __exit__(self, *exc):
    for signum, old in self._old.items():
      signal.signal(signum, old)


def _guard_nonfinite(step_fn, mode: str):
  """With mode 'skip', a step whose loss is not finite leaves the state unchanged (but counts the step)."""
  if mode not in ("stop", "skip"):
    raise ConfigError(f"train.on_nonfinite={mode!r}; expected 'stop' or 'skip'")
  if mode == "stop":
    return step_fn

  def guarded(state, batch, rng):
    new_state, metrics = step_fn(state, batch, rng)
    ok = jnp.isfinite(metrics["loss"])
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    kept["step"] = new_state["step"]
    return kept, {**metrics, "skipped": 1.0 - ok.astype(jnp.float32)}
  return guarded


def compile_step(task, mesh, on_nonfinite: str = "stop", *, warmup: bool = False, ema_decay: float = 0.0):
  """The jitted train step (`warmup`: the task's warm-up step instead; `ema_decay`: also the weight average)."""
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  fn = weight_average.averaging(task.warmup_step if warmup else task.train_step, ema_decay)
  return jax.jit(_guard_nonfinite(fn, on_nonfinite), in_shardings=(repl, data, repl),
                 out_shardings=(repl, repl), donate_argnums=0)


def evaluate(task, state, writer: MetricWriter, step: int, *, write_images: bool) -> dict:
  state = weight_average.for_inference(state)
  scalars = {}
  for evaluator in task.evaluators:
    result = evaluator.run(state, progress=writer.eval_progress(evaluator.name))
    scalars.update(result.scalars)
    if write_images:
      for name, image in result.images.items():
        writer.write_image(step, name.replace("/", "_"), image)
  if scalars:
    writer.write_scalars(step, scalars, split="eval")
    writer.eval_line(step, scalars, [e.name for e in task.evaluators])
  return scalars


def _mean_metrics(history: list[dict]) -> dict:
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def run(config, workdir: str, *, task=None) -> dict:
  """Trains (or evaluates/predicts, by `config.mode`) and returns the last eval scalars."""
  if task is None:
    method = get_method(config.method)
    if hasattr(method, "run"):  # multi-stage methods (selective masking) call back here once per stage
      return method.run(config, workdir, train_run=run)
  config_checks.check_config(config)  # contradictions fail here, before a model is built or compiled
  config_checks.check_workdir(workdir)
  mesh = sharding.make_mesh()
  tc = config.train
  writer = MetricWriter(workdir, total_steps=tc.steps)
  task = task or get_method(config.method).build(config, mesh, workdir)
  checkpointing.wait_for_all_processes("maskseg_built")  # before the first collective
  state = sharding.replicate(weight_average.attach(task.state, tc.get("ema_decay", 0.0)), mesh)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints,
                                    best_metric=tc.best_metric or None)
  try:
    modes = _modes(task, workdir, writer)
    if config.mode not in modes:
      raise ConfigError(f"config.mode={config.mode!r} is not available for method {config.method!r}; "
                        f"expected one of {sorted(modes)}")
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(checkpointing.abstract_like(state), task.train_iter, warn=writer.log)
      writer.log(f"resumed from {ckpt.directory} at step {meta['step']}")
    elif config.mode != "train" and not config.get("eval_untrained", False):
      raise ConfigError(f"config.mode={config.mode!r} needs a trained model but {ckpt.directory} holds no "
                        "checkpoint; train first (--config.mode=train), point --workdir at a trained run, or "
                        "pass --config.eval_untrained=True to use the untrained model on purpose")
    if config.mode == "train":
      return _train(config, task, state, mesh, writer, ckpt)
    return modes[config.mode](weight_average.for_inference(state)) or {}
  finally:
    ckpt.close()
    writer.close()


def _modes(task, workdir: str, writer: MetricWriter) -> dict:
  """mode name -> fn(state) -> scalars; 'train' is dispatched by `run` (it needs the loop's arguments)."""

  def evaluate_once(state):
    scalars = evaluate(task, state, writer, int(state["step"]), write_images=True)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "eval.json"), "w") as f:
        json.dump(scalars, f, indent=1, sort_keys=True)
    return scalars

  modes = {"train": None, "eval": evaluate_once, **task.extra_modes}
  if task.predict is not None:
    modes["predict"] = lambda state: task.predict(state) or {}
  return modes


def _train(config, task, state, mesh, writer: MetricWriter, ckpt) -> dict:
  tc = config.train
  ema = tc.get("ema_decay", 0.0)
  step_fn = compile_step(task, mesh, tc.on_nonfinite, ema_decay=ema)
  # A task's cheaper warm-up step runs while step < warmup_steps (switched here, on the host: one program each).
  warm_fn = compile_step(task, mesh, tc.on_nonfinite, warmup=True, ema_decay=ema) if task.warmup_step else None
  base_key = jax.random.PRNGKey(config.seed)
  step = int(jax.device_get(state["step"]))
  history, last_eval, evals_done, first = [], {}, 0, True
  start = time.perf_counter()
  if step >= tc.steps:
    writer.log(f"already trained to step {step} (train.steps={tc.steps}); evaluating")
    return evaluate(task, state, writer, step, write_images=True)
  with _StopFlag() as flag:
    while step < tc.steps:
      batch = sharding.to_global(next(task.train_iter), mesh)
      rng = jax.random.fold_in(base_key, step)
      if first and jax.process_count() > 1:  # compile everywhere, then meet: gloo (CPU) waits only 30 s
        step_fn = step_fn.lower(state, batch, rng).compile()
        warm_fn = warm_fn and warm_fn.lower(state, batch, rng).compile()
        checkpointing.wait_for_all_processes("maskseg_step_compiled")
      fn = warm_fn if warm_fn is not None and step < task.warmup_steps else step_fn
      state, metrics = fn(state, batch, rng)
      if first:
        jax.block_until_ready(metrics)
        writer.log(f"compiled and ran the first step in {time.perf_counter() - start:.1f}s")
        first = False
      step += 1
      history.append(metrics)
      last = step == tc.steps
      if step == tc.stop_at:
        flag.stop, flag.reason = True, f"train.stop_at={tc.stop_at}"
      flag.agree()
      if step % tc.log_every == 0 or last or flag.stop:
        scalars = _mean_metrics(history)
        history = []
        if tc.on_nonfinite == "stop" and not np.isfinite(scalars["loss"]):
          terms = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items())
          good = ckpt.latest_step()
          raise NonFiniteLossError(
              f"non-finite loss within steps ({step - tc.log_every}, {step}]: {terms}. Stopped without "
              f"saving; the last good checkpoint is step {good} in {ckpt.directory}. Lower optim.lr or set "
              f"--config.train.on_nonfinite=skip to skip such steps.")
        scalars.update(writer.progress(step, scalars, task.images_per_step))
        writer.write_scalars(step, scalars, split="train")
      eval_now = bool(tc.eval_every and step % tc.eval_every == 0) or last
      if eval_now:
        evals_done += 1
        images = last or (tc.image_every and evals_done % tc.image_every == 0)
        last_eval = evaluate(task, state, writer, step, write_images=bool(images))
      if step % tc.checkpoint_every == 0 or last or flag.stop:
        ckpt.save(step, state, task.train_iter, last_eval if eval_now else None)
      if flag.stop:
        writer.log(f"stopping early at step {step} ({flag.reason}): saved a checkpoint to {ckpt.directory}; "
                   "rerun the same command to resume")
        break
  writer.log(f"done: {step} steps in {time.perf_counter() - start:.1f}s")
  return last_eval
