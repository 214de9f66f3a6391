"""Hardening (issue #12): checkpoints and run folders you can trust, every bad input a one-line error.

One case per row of the issue: the command line's config and flag failures (exit code 2, one `error:` line,
a traceback only with --debug), run folders that must not be resumed by another model or have their
config.json replaced, checkpoints whose bytes changed on disk, read-only folders, eval without a checkpoint,
Ctrl-C, 16-bit images, and two processes that must train exactly what one process trains.

Run as a script (`python tests/test_hardening.py workdir=... [port=... pid=...]`) this file is the parity
worker of the two-process test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_reliability import (CONFIG, REPO, cli_env, data_positions, last_by_step, make_config, metric_rows,
                              read_state, saved_steps)

LMAE_CONFIG = os.path.join(REPO, "configs", "lmae.py")
TWO_STEPS = {"train.steps": 2, "train.checkpoint_every": 1}


def run_cli(args, cwd, **env):
  return subprocess.run([sys.executable, "-m", "maskseg_jax.main", *args], cwd=cwd, env={**cli_env(), **env},
                        capture_output=True, text=True, timeout=600, check=False)


def assert_one_line_error(r, fragments):
  """Exit code 2, the last stderr line `error: ...` holding every fragment, no traceback."""
  assert r.returncode == 2, r.stderr[-3000:]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), r.stderr[-3000:]
  for fragment in fragments:
    assert fragment in last, f"{fragment!r} not in: {last}"


def sha(path) -> str:
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ config loading and flags

def _config_file(tmp, name, body):
  path = tmp / f"{name}.py"
  path.write_text(body)
  return str(path)


CLI_CASES = {  # id -> (args given tmp_path, fragments of the error line)
    "misspelt_key": (lambda t: [f"--config={CONFIG}", "--config.train.stepz=3"],
                     ["--config.train.stepz=3", "unknown config key 'stepz'", "did you mean 'steps'?"]),
    "misspelt_section": (lambda t: [f"--config={CONFIG}", "--config.trian.steps=3"],
                         ["--config.trian.steps=3", "unknown config key 'trian'", "did you mean 'train'?"]),
    "bad_value": (lambda t: [f"--config={CONFIG}", "--config.train.steps=abc"],
                  ["--config.train.steps=abc", "invalid literal for int()"]),
    "missing_file": (lambda t: ["--config=missing.py"], ["config file missing.py not found",
                                                         "a packaged config's name", "--list_configs"]),
    "syntax_error": (lambda t: [f"--config={_config_file(t, 'syntax', 'def get_config(arg=None):' + chr(10) + '  return 1 +' + chr(10))}"],
                     ["syntax.py has a syntax error at line 2"]),
    "get_config_raises": (lambda t: [f"--config={_config_file(t, 'raises', 'def get_config(arg=None):' + chr(10) + '  raise ValueError(arg)' + chr(10))}:xyz"],
                          ["raises.py:xyz", "get_config raised ValueError: xyz"]),
    "bad_config_arg": (lambda t: [f"--config={REPO}/configs/lmae.py:camvid,abc"],
                       ["lmae.py:camvid,abc", "'abc' is not an accepted value", "size: full|cpu|recipe"]),
    "get_config_returns_none": (lambda t: [f"--config={_config_file(t, 'none', 'def get_config(arg=None):' + chr(10) + '  pass' + chr(10))}"],
                                ["none.py", "get_config() returned NoneType", "ConfigDict"]),
    "no_config": (lambda t: [], ["--config is required", "e.g. --config=supervised.py"]),
    "unknown_flag": (lambda t: [f"--config={CONFIG}", "--wokdir=x"], ["unknown flag --wokdir"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_config_and_flag_errors_are_one_line(tmp_path, case):
  make_args, fragments = CLI_CASES[case]
  r = run_cli([*make_args(tmp_path), f"--workdir={tmp_path / 'w'}"], tmp_path)
  assert_one_line_error(r, fragments)
  assert not (tmp_path / "w").exists()  # nothing was made before the config was known to be good


@pytest.mark.parametrize("switch", ["--debug", "MASKSEG_DEBUG=1"])
def test_debug_switch_shows_the_traceback(tmp_path, switch):
  env = dict([switch.split("=")]) if "=" in switch else {}
  args = [f"--config={CONFIG}", "--config.train.stepz=3"] + ([switch] if not env else [])
  r = run_cli(args, tmp_path, **env)
  assert r.returncode != 0 and "Traceback" in r.stderr and "did you mean 'steps'?" in r.stderr


# ------------------------------------------------------------------------------ run folders

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 2-step run with a checkpoint per step and its config.json, as the CLI leaves it."""
  from maskseg_jax import config_checks, train
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  config = make_config(**TWO_STEPS)
  config_checks.check_workdir(workdir)
  config_checks.write_config(config, workdir)
  train.run(config, workdir)
  return workdir


def copy_run(trained, tmp_path) -> str:
  workdir = str(tmp_path / "run")
  shutil.copytree(trained, workdir)
  return workdir


@pytest.mark.parametrize("case", ["other_width", "no_config"])
def test_cli_never_replaces_the_config_of_another_run(trained, tmp_path, case):
  workdir = copy_run(trained, tmp_path)
  before = sha(os.path.join(workdir, "config.json"))
  if case == "other_width":
    r = run_cli([f"--config={CONFIG}", f"--workdir={workdir}", "--config.model.width=0.25"], tmp_path)
    fragments = [workdir, "another method or model shape", "model.width: 0.125 in the run, 0.25 here",
                 "config.json"]
  else:
    r = run_cli([f"--workdir={workdir}"], tmp_path)
    fragments = ["--config is required"]
  assert_one_line_error(r, fragments)
  assert sha(os.path.join(workdir, "config.json")) == before
  assert saved_steps(workdir) == [1, 2]


RUN_FOLDER_CASES = {  # id -> (config overrides or another config file, change to config.json, fragments)
    "other_method": ({"file": LMAE_CONFIG}, None, ["method: 'supervised' in the run, 'lmae' here"]),
    "other_classes": ({"data.num_classes": 5}, None, ["data.num_classes: 6 in the run, 5 here"]),
    "other_backbone": ({"model.backbone": "resnet34"}, None, ["model.backbone: 'resnet18' in the run"]),
    "malformed_json": ({}, '{"method": "supervised", "mod', ["config.json of this trained run is unreadable"]),
    "list_json": ({}, "[1, 2]", ["unreadable", "JSON list without a 'method'"]),
}


@pytest.mark.parametrize("case", sorted(RUN_FOLDER_CASES))
def test_run_folder_identity_is_checked_before_config_json_is_replaced(trained, tmp_path, case):
  from maskseg_jax import config_base, config_checks
  from maskseg_jax.errors import ConfigError
  overrides, saved_text, fragments = RUN_FOLDER_CASES[case]
  workdir = copy_run(trained, tmp_path)
  path = os.path.join(workdir, "config.json")
  if saved_text is not None:
    Path(path).write_text(saved_text)
  overrides = dict(overrides)
  config = (config_base.load_config(overrides.pop("file")) if "file" in overrides else make_config(**overrides))
  with pytest.raises(ConfigError) as info:
    config_checks.check_run_folder(config, workdir)
  for fragment in fragments:
    assert fragment in str(info.value)
  # What may change between resumes passes: steps, learning rate, dtype, dropout.
  config_checks.check_run_folder(make_config(**{"train.steps": 9, "optim.lr": 0.5, "model.dropout": 0.0}),
                                 trained)


def test_resume_with_another_width_names_the_arrays(trained, tmp_path, capfd):
  """Without the config.json check (in-process), the checkpoint's shapes still stop it, before any read."""
  from maskseg_jax import checkpointing, train
  workdir = copy_run(trained, tmp_path)
  with pytest.raises(checkpointing.CheckpointMismatchError) as info:
    train.run(make_config(**TWO_STEPS, **{"model.width": 0.25}), workdir)
  message = str(info.value)
  assert "checkpoint step 2" in message and "written by a different model" in message
  assert " is (" in message and "there but (" in message and "config.json" in message
  out = capfd.readouterr()
  assert "Event loop is closed" not in out.err + out.out and "Traceback" not in out.err
  assert saved_steps(workdir) == [1, 2] and not any(d.startswith("damaged") for d in
                                                    os.listdir(os.path.join(workdir, "checkpoints")))


def _make_read_only(path):
  """chmod a-w, and chattr +i when running as root (which ignores permission bits); -> undo function."""
  os.chmod(path, 0o555)
  immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", path], capture_output=True).returncode == 0

  def undo():
    if immutable:
      subprocess.run(["chattr", "-i", path], check=False)
    os.chmod(path, 0o755)
  return undo


def test_read_only_checkpoint_folder_fails_before_training(trained, tmp_path):
  from maskseg_jax import train
  from maskseg_jax.errors import ConfigError
  workdir = copy_run(trained, tmp_path)
  folder = os.path.join(workdir, "checkpoints")
  undo = _make_read_only(folder)
  try:
    try:
      os.mkdir(os.path.join(folder, "probe"))
      os.rmdir(os.path.join(folder, "probe"))
      pytest.skip("this user can write into read-only folders")
    except OSError:
      pass
    before = sha(os.path.join(workdir, "metrics.jsonl"))
    with pytest.raises(ConfigError, match=f"checkpoint folder {folder} is not writable .*chmod u\\+w"):
      train.run(make_config(**{"train.steps": 4}), workdir)
    assert sha(os.path.join(workdir, "metrics.jsonl")) == before  # nothing trained
  finally:
    undo()


def test_checkpoints_path_that_is_a_file(tmp_path):
  from maskseg_jax import config_checks
  from maskseg_jax.errors import ConfigError
  (tmp_path / "checkpoints").write_text("not a folder")
  with pytest.raises(ConfigError, match="checkpoints is not a folder"):
    config_checks.check_workdir(str(tmp_path))


@pytest.mark.parametrize("mode", ["eval", "predict"])
def test_eval_and_predict_without_a_checkpoint_refuse(tmp_path, mode):
  from maskseg_jax import train
  from maskseg_jax.errors import ConfigError
  workdir = str(tmp_path / "fresh")
  with pytest.raises(ConfigError) as info:
    train.run(make_config(mode=mode), workdir)
  message = str(info.value)
  assert f"config.mode='{mode}' needs a trained model" in message and "holds no checkpoint" in message
  assert "--config.eval_untrained=True" in message
  assert not os.path.exists(os.path.join(workdir, "eval.json"))
  assert not os.path.exists(os.path.join(workdir, "predictions"))


def test_eval_untrained_is_explicit(tmp_path):
  from maskseg_jax import train
  workdir = str(tmp_path / "fresh")
  scalars = train.run(make_config(mode="eval", eval_untrained=True), workdir)
  assert 0.0 <= scalars["val/miou"] <= 1.0 and os.path.isfile(os.path.join(workdir, "eval.json"))


# ------------------------------------------------------------------------------ damaged checkpoints

def _small_checkpoints(directory, steps=(1, 2, 3)):
  """Steps of incompressible arrays (so a flipped byte decodes silently instead of failing zstd)."""
  import jax.numpy as jnp
  from maskseg_jax import checkpointing
  ck = checkpointing.Checkpointer(str(directory), keep=len(steps))
  rng = np.random.default_rng(0)
  for step in steps:
    ck.save(step, {"w": jnp.asarray(rng.normal(size=(64, 256)), jnp.float32), "step": jnp.int32(step)})
  return ck


def _biggest_array_file(step_dir) -> str:
  chunks = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  return max((os.path.join(chunks, f) for f in os.listdir(chunks)), key=os.path.getsize)


def flip_bytes(path) -> None:
  """Changes 16 bytes in the middle of a file, size unchanged (a disk or copy error)."""
  data = bytearray(Path(path).read_bytes())
  middle = len(data) // 2
  data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
  Path(path).write_bytes(bytes(data))


def truncate(path) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


DAMAGE = {"flipped": flip_bytes, "truncated": truncate}


@pytest.mark.parametrize("damage", [("flipped",), ("truncated",), ("truncated", "flipped")],
                         ids=["flipped_bytes", "truncated_array", "two_damaged_steps"])
def test_damaged_steps_fall_back_with_one_line_each(tmp_path, capfd, damage):
  from maskseg_jax import checkpointing
  ck = _small_checkpoints(tmp_path / "ck")
  expected = ck.read_state(1)
  damaged_steps = [3, 2][:len(damage)]
  for step, how in zip(damaged_steps, damage):
    DAMAGE[how](_biggest_array_file(tmp_path / "ck" / str(step)))
  abstract = checkpointing.abstract_like({"w": expected["w"], "step": expected["step"]})
  good = 3 - len(damage)
  lines = []
  state, meta = ck.restore(abstract, warn=lines.append)
  assert meta["step"] == good
  np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(ck.read_state(good)["w"]))
  assert len(lines) == len(damage)
  for line, step, how in zip(lines, damaged_steps, damage):
    assert line.startswith(f"warning: step {step} is damaged (")
    assert line.endswith(f"); kept as damaged_{step}, restoring step {good}") and "\n" not in line
    if how == "flipped":
      assert "checksum mismatch" in line
    assert os.path.isdir(tmp_path / "ck" / f"damaged_{step}")
  out = capfd.readouterr()
  assert "TensorStore" not in out.err + out.out and "Traceback" not in out.err
  ck.close()


def test_flipped_bytes_in_a_run_resume_from_the_previous_step(trained, tmp_path, capsys):
  """The issue's row: a silently corrupted latest step used to restore NaNs; now the run redoes that step and
  ends exactly where the undamaged run ended."""
  from maskseg_jax import train
  workdir = copy_run(trained, tmp_path)
  flip_bytes(_biggest_array_file(os.path.join(workdir, "checkpoints", "2")))
  train.run(make_config(**TWO_STEPS), workdir)
  out = capsys.readouterr().out
  assert "warning: step 2 is damaged (checksum mismatch" in out and "restoring step 1" in out
  got, want = read_state(workdir), read_state(trained)
  import jax
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(want["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged_2"))


def test_all_steps_damaged_is_one_error(tmp_path):
  from maskseg_jax import checkpointing
  from maskseg_jax.errors import CheckpointError
  ck = _small_checkpoints(tmp_path / "ck", steps=(1, 2))
  for step in (1, 2):
    flip_bytes(_biggest_array_file(tmp_path / "ck" / str(step)))
  import jax.numpy as jnp
  abstract = checkpointing.abstract_like({"w": jnp.zeros((64, 256), jnp.float32), "step": jnp.int32(0)})
  with pytest.raises(CheckpointError, match="could be restored .*step 2: checksum mismatch.*step 1: checksum"):
    ck.restore(abstract)
  assert ck.all_steps() == [1, 2]  # nothing moved: no good step proves which ones are damaged
  ck.close()


# ------------------------------------------------------------------------------ Ctrl-C

class _SignalAt:
  """A training stream that sends this process SIGINT `times` times when batch `at` is drawn."""

  def __init__(self, inner, at: int, times: int):
    self.inner, self.at, self.times, self.count = inner, at, times, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.count += 1
    if self.count == self.at:
      for _ in range(self.times):
        os.kill(os.getpid(), signal.SIGINT)
    return next(self.inner)

  def get_state(self) -> bytes:
    return json.dumps(self.inner.get_state()).encode()

  def set_state(self, state) -> None:
    self.inner.set_state(json.loads(state))


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_saves_like_sigterm(tmp_path, capsys, presses):
  """One Ctrl-C: the step finishes, a checkpoint is saved, the run returns (rerun resumes). Two: quit now."""
  from maskseg_jax import sharding, train
  from maskseg_jax.methods import get_method
  workdir = str(tmp_path / "w")
  before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when pytest runs in the background
  config = make_config(**{"train.steps": 4, "train.checkpoint_every": 4})
  task = get_method("supervised").build(config, sharding.make_mesh(), workdir)
  task.train_iter = _SignalAt(task.train_iter, at=2, times=presses)
  if presses == 1:
    train.run(config, workdir, task=task)
    captured = capsys.readouterr()
    assert "stopping early at step 2 (Ctrl-C (SIGINT))" in captured.out and "rerun the same command" in captured.out
    assert "Ctrl-C again quits without saving" in captured.err
    assert saved_steps(workdir) == [2]
  else:
    with pytest.raises(KeyboardInterrupt):
      train.run(config, workdir, task=task)
    assert saved_steps(workdir) == []
  assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


# ------------------------------------------------------------------------------ 16-bit images

def _png16_rgb(arr: np.ndarray, path) -> None:
  """A 48-bit RGB PNG (Pillow cannot write one)."""
  import struct
  import zlib
  h, w, _ = arr.shape
  raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
  Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["gray16", "rgb48"])
def test_16bit_images_decode_to_their_values(tmp_path, kind):
  """Training and completion read images through `sources.read_image`: 16-bit values v become round(v/257)
  (they used to clip to 255, white)."""
  import fixtures
  from maskseg_jax.data import file_layouts, sources
  info = fixtures.make_folder_fixture(tmp_path / "data", n=2, size=(12, 10), num_classes=5)
  path = os.path.join(info["root"], "images", "img_000.png")
  gray = (np.arange(120).reshape(12, 10) * 546).astype(np.uint16)  # 0..64974
  if kind == "gray16":
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode == "I;16"
    want = np.repeat(np.round(gray / 257.0).astype(np.uint8)[..., None], 3, axis=-1)
  else:
    rgb = np.stack([gray, gray // 2, 65535 - gray], -1).astype(np.uint16)
    _png16_rgb(rgb, path)
    want = (rgb >> 8).astype(np.uint8)
  np.testing.assert_array_equal(sources.read_image(path), want)
  source = file_layouts.FolderSource(info["root"], "", num_classes=5)
  item = source[[source.id_of(i) for i in range(len(source))].index("img_000")]
  np.testing.assert_array_equal(item["image"], want)
  assert len(np.unique(item["image"])) > 50  # not the flat white the clipping decode gave


# ------------------------------------------------------------------------------ two processes

def _parity_worker(argv: list[str]) -> None:
  """One process of the parity test: the real train loop with the state in float64 (float-order noise ~1e-16
  instead of ~1e-7, so any semantic difference shows), logging a digest of every local batch row."""
  args = dict(a.split("=", 1) for a in argv)
  import jax
  if "port" in args:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args['port']}", num_processes=2,
                               process_id=int(args["pid"]))
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  from maskseg_jax import sharding, train
  from maskseg_jax.methods import get_method
  steps = int(args["steps"])  # stop (save, no eval) after `steps` of a `steps + 1` run: the test trains the last
  config = make_config(**{"train.steps": steps + 1, "train.checkpoint_every": steps + 1, "train.stop_at": steps})
  workdir = args["workdir"]
  task = get_method("supervised").build(config, sharding.make_mesh(), workdir)
  task.state = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                            task.state)
  task.train_iter = _RowDigests(task.train_iter, os.path.join(workdir, f"rows_{jax.process_index()}.jsonl"))
  train.run(config, workdir, task=task)


class _RowDigests:
  """Passes batches through, appending one line of per-row digests (image and label) per batch to `path`."""

  def __init__(self, inner, path):
    self.inner, self.path = inner, path

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.inner)
    rows = [hashlib.sha1(np.ascontiguousarray(batch["image"][i]).tobytes()
                         + np.ascontiguousarray(batch["label"][i]).tobytes()).hexdigest()
            for i in range(len(batch["image"]))]
    with open(self.path, "a") as f:
      f.write(json.dumps(rows) + "\n")
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self.inner.get_state()).encode()

  def set_state(self, state) -> None:
    self.inner.set_state(json.loads(state))


def global_rows(workdir) -> list[list[str]]:
  """Per step, the rows of the global batch: process 0's rows, then process 1's."""
  files = sorted(f for f in os.listdir(workdir) if f.startswith("rows_"))
  per_process = [[json.loads(line) for line in open(os.path.join(workdir, f))] for f in files]
  return [sum((p[i] for p in per_process), []) for i in range(len(per_process[0]))]


@pytest.mark.slow
def test_two_processes_train_exactly_like_one(tmp_path):
  """2 processes x 2 CPU devices vs 1 process x 4 devices, 4 steps at the config's lr, state in float64.

  Measured (issue #12): in float32 the runs agree to 3e-7 at step 1 and then drift (1e-5, 7e-4, 6%) because
  float-order differences of the cross-process reductions are amplified by batch norm at this lr; in float64
  the same runs agree to ~1e-12 after 6 steps. So the divergence is float-order chaos, not semantics (batch
  norm statistics, loss normalisation and dropout are global under jit; batches are identical). The checkpoints
  then train step 5 in this process (1 process, 8 devices, float32): a 2-process checkpoint (state and data
  position) restores like a 1-process one."""
  import jax
  import portpicker
  steps = 4
  runs = {name: str(tmp_path / name) for name in ("one", "two")}
  port = portpicker.pick_unused_port()
  me = os.path.abspath(__file__)
  procs = []
  for name, pids in (("one", [None]), ("two", [0, 1])):
    for pid in pids:
      os.makedirs(runs[name], exist_ok=True)
      extra = [] if pid is None else [f"port={port}", f"pid={pid}"]
      env = cli_env(devices=4 if pid is None else 2)
      log = open(tmp_path / f"{name}_{pid}.log", "w")
      procs.append((subprocess.Popen([sys.executable, me, f"workdir={runs[name]}", f"steps={steps}", *extra],
                                     env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), log))
  try:
    for proc, log in procs:
      code = proc.wait(timeout=900)
      log.close()
      assert code == 0, Path(log.name).read_text()[-4000:]
  finally:
    for proc, _ in procs:
      if proc.poll() is None:
        proc.kill()
  rows = {name: global_rows(w) for name, w in runs.items()}
  assert len(rows["one"]) == steps and rows["one"] == rows["two"]  # the same examples, augmented the same
  assert len(set(sum(rows["one"], []))) > 8  # (and real, varying batches)
  train_rows = [(r["step"], r["split"]) for r in metric_rows(runs["two"]) if r["split"] == "train"]
  assert train_rows == [(s, "train") for s in range(1, steps + 1)]  # written once (process 0), not per process
  assert data_positions(runs["two"], steps) == {"process_0-of-2.json": steps, "process_1-of-2.json": steps}
  losses = {name: last_by_step(metric_rows(w), "train") for name, w in runs.items()}
  for step in range(1, steps + 1):  # logged as float32: equal to its rounding
    assert losses["two"][step]["loss"] == pytest.approx(losses["one"][step]["loss"], rel=2.5e-7, abs=0)
  jax.config.update("jax_enable_x64", True)  # read the float64 checkpoints as they are
  try:
    one, two = read_state(runs["one"]), read_state(runs["two"])
  finally:
    jax.config.update("jax_enable_x64", False)
  for part in ("params", "batch_stats", "opt"):
    leaves_one, leaves_two = jax.tree.leaves(one[part]), jax.tree.leaves(two[part])
    assert len(leaves_one) == len(leaves_two) > 0
    for a, b in zip(leaves_two, leaves_one):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9)
  # The steps did train (equal untrained models would prove nothing): the loss moved by more than 10%.
  assert abs(losses["one"][steps]["loss"] - losses["one"][1]["loss"]) > 0.1 * losses["one"][1]["loss"]
  from maskseg_jax import train
  for workdir in runs.values():  # back in this process: 1 process, 8 devices, float32
    train.run(make_config(**{"train.steps": steps + 1, "train.checkpoint_every": steps + 1}), workdir)
  s1, s2 = read_state(runs["one"]), read_state(runs["two"])
  assert int(s1["step"]) == int(s2["step"]) == steps + 1
  assert data_positions(runs["two"], steps + 1) == {"process_0-of-1.json": steps + 1}  # global batches
  for a, b in zip(jax.tree.leaves(s2["params"]), jax.tree.leaves(s1["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  last = [last_by_step(metric_rows(w), "train")[steps + 1]["loss"] for w in runs.values()]
  assert last[0] == pytest.approx(last[1], rel=1e-6)


if __name__ == "__main__":
  _parity_worker(sys.argv[1:])
