"""The command line: overrides, saved config, resume on rerun, clear errors for bad keys and data."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.data.synthetic.num_train=16", "--config.data.synthetic.num_val=8",
        "--config.data.synthetic.image_size=(32, 32)", "--config.data.crop_size=(32, 32)",
        "--config.data.eval_size=(32, 32)", "--config.data.batch_size=8", "--config.data.eval_batch_size=8",
        "--config.model.width=0.125", "--config.train.log_every=1", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2"]


def run_cli(args, cwd):
  # PYTHONPATH: the package of this checkout, whatever the cwd (the runs below start outside the checkout)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
  return subprocess.run([sys.executable, "-m", "maskseg_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_unknown_config_key_names_the_key(tmp_path):
  r = run_cli([f"--config={REPO}/configs/supervised.py", "--config.train.stepz=3"], tmp_path)
  assert r.returncode != 0
  assert "stepz" in (r.stderr + r.stdout)


def test_train_saves_config_and_resumes(tmp_path):
  work = tmp_path / "w"
  base = ["--config=supervised.py", f"--workdir={work}", *TINY]  # the packaged config, run outside the checkout
  r = run_cli(base + ["--config.train.steps=2"], tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.load(open(work / "config.json"))
  assert saved["train"]["steps"] == 2 and saved["model"]["width"] == 0.125
  assert '"val/miou"' in r.stdout
  assert "run: supervised, mode train | data synthetic (6 classes) | model deeplabv3plus" in r.stdout
  assert "overrides: " in r.stdout and "--config.train.steps=2" in r.stdout and f"workdir: {work}" in r.stdout
  assert "[eval step 2] val/miou " in r.stdout  # the model's own metric leads the eval line
  r2 = run_cli(base + ["--config.train.steps=4"], tmp_path)
  assert r2.returncode == 0, r2.stderr[-3000:]
  assert "resumed from" in r2.stdout and "at step 2" in r2.stdout
  steps = [json.loads(l)["step"] for l in open(work / "metrics.jsonl") if '"train"' in l]
  assert steps == [1, 2, 3, 4]


def test_default_workdir_under_runs(tmp_path):
  # An unknown mode fails right after the run folder is made, so this checks the naming without training.
  r = run_cli(["--config", "supervised:synthetic,unet", "--config.mode=dance"], tmp_path)
  assert r.returncode == 2 and "config.mode='dance'" in r.stderr
  runs = os.listdir(tmp_path / "runs")
  assert len(runs) == 1 and runs[0].startswith("supervised_synthetic_unet_")
  assert json.load(open(tmp_path / "runs" / runs[0] / "config.json"))["mode"] == "dance"


def test_packaged_configs_are_listed_and_a_file_in_the_cwd_wins(tmp_path):
  r = run_cli(["--list-configs"], tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = r.stdout.splitlines()
  assert [l.split()[0] for l in lines if not l.startswith(" ")] == [
      "lmae.py", "lmae_voc.py", "selective.py", "semi.py", "supervised.py"]
  lmae = lines.index(next(l for l in lines if l.startswith("lmae.py")))
  assert lines[lmae].split()[1] == os.path.join(REPO, "maskseg_jax", "configs", "lmae.py")
  assert "'camvid,recipe'" in lines[lmae + 1] and "'synthetic'" in lines[lmae + 1]
  # A file of that name in the cwd is a path, and a path is used before a packaged name.
  (tmp_path / "supervised.py").write_text("def get_config(arg=None):\n  raise ValueError('the local file')\n")
  r = run_cli(["--config=supervised.py", "--config.mode=dance"], tmp_path)
  assert r.returncode == 2 and "the local file" in r.stderr, r.stderr[-3000:]
  r = run_cli(["--config=nosuch.py"], tmp_path)
  assert r.returncode == 2 and "nosuch.py not found" in r.stderr and "--list_configs" in r.stderr


def test_missing_dataset_is_a_clear_error(tmp_path):
  r = run_cli([f"--config={REPO}/configs/supervised.py:voc", f"--workdir={tmp_path / 'w'}",
               "--config.data.root=/nonexistent/VOC2012"], tmp_path)
  assert r.returncode == 2
  assert "/nonexistent/VOC2012" in r.stderr and "JPEGImages" in r.stderr
  assert "Traceback" not in r.stderr
