"""Smoke tests of the semi-supervised experiment scripts at a minuscule scale (structure, not numbers).

Each script runs as a user would run it, in a subprocess with one CPU device (compiles are several times
cheaper than on the suite's 8 fake devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _run(script: str, *args: str) -> str:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", script), *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _json_block(stdout: str) -> dict:
  """The JSON document the script prints (it starts at the first line that is exactly '{')."""
  lines = stdout.splitlines()
  start = lines.index("{")
  depth, end = 0, start
  for end in range(start, len(lines)):
    depth += lines[end].count("{") - lines[end].count("}")
    if depth == 0:
      break
  return json.loads("\n".join(lines[start:end + 1]))


def test_semi_camvid_smoke(tmp_path):
  out = _run("semi_camvid.py", f"--workdir={tmp_path}", "--steps=2", "--crop=32,32", "--image_scale=0.1",
             "--max_eval_images=8", "--validate_items=2", "--variants=supervised,fixmatch")
  doc = _json_block(out)
  rows = doc["results"]
  assert [r["variant"] for r in rows] == ["supervised", "fixmatch"]
  for r in rows:
    assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["pixel_acc"] <= 1.0
    assert r["steps"] == 2 and r["labeled"] == 46  # 1/8 of CamVid's 367 train images, for every variant
  assert rows[0]["conf_frac"] is None and 0.0 <= rows[1]["conf_frac"] <= 1.0
  # The same generated split files serve every variant.
  assert os.listdir(tmp_path / "splits") == ["camvid-train-seed0"]
  assert "CamVid val mIoU, 1/8 labeled (46 images), 2 steps" in out  # the title names the split evaluated
  table = out[out.index("| method |"):].splitlines()
  assert table[0].startswith("| method | mIoU") and len(table) == 2 + len(rows)
  assert table[2].startswith("| supervised only | ") and table[3].startswith("| FixMatch | ")


def test_benchmark_semi_smoke():
  doc = _json_block(_run("benchmark_semi.py", "--size=tiny", "--steps=1", "--variants=supervised,fixmatch"))
  rows = doc["results"]
  assert [r["variant"] for r in rows] == ["supervised", "fixmatch"]
  assert rows[0]["images_per_step"] == 8 and rows[1]["images_per_step"] == 16
  assert all(r["images_per_s"] > 0 and r["step_gflop"] > 0 for r in rows)
  assert rows[1]["gflop_vs_first"] > 1.0  # FixMatch adds the weak and strong passes: more work per step


def _semi_camvid_module():
  import importlib.util
  spec = importlib.util.spec_from_file_location("semi_camvid", os.path.join(REPO, "experiments", "semi_camvid.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_semi_camvid_inits_and_seed_summary(tmp_path):
  exp = _semi_camvid_module()
  assert exp.parse_inits([f"selective={tmp_path}"]) == {"none": "", "selective": str(tmp_path)}
  for bad, words in (("selective", "expected NAME=RUN"), ("none=" + str(tmp_path), "other than 'none'"),
                     (f"sel={tmp_path}/missing", "is not a folder")):
    try:
      exp.parse_inits([bad])
    except SystemExit as e:
      assert words in str(e) and str(e).startswith("error: --init=")
    else:
      raise AssertionError(bad)
  rows = [dict(init=i, variant=v, miou=m) for i, v, m in (("none", "supervised", 0.40), ("none", "supervised", 0.42),
                                                          ("none", "unimatch", 0.45), ("none", "unimatch", 0.47),
                                                          ("selective", "supervised", 0.43))]
  table = exp.seed_summary(rows).splitlines()
  assert table[2].startswith("| none | supervised only | 2 | 0.4100 | 0.0200 | - |")
  assert table[3].startswith("| none | UniMatch | 2 | 0.4600 | 0.0200 | +5.0 | 0.450 / 0.470 |")
  assert table[4].startswith("| selective | supervised only | 1 | 0.4300 |")


def test_semi_camvid_set_keeps_field_types():
  """--set parses a value as the field's type: integer sizes stay integers, float tuples floats."""
  from maskseg_jax import config_base
  exp = _semi_camvid_module()
  config = config_base.load_config(os.path.join(REPO, "configs", "semi.py"), "camvid,cpu,supervised")
  config.unlock()
  for key, text, expected in (("data.eval_size", "184,240", (184, 240)), ("optim.lr", "0.1", 0.1),
                              ("semi.labeled_fraction", "0", 0.0), ("data.cache_items", "true", True)):
    exp.set_field(config, key, text)
    got = config
    for part in key.split("."):
      got = got[part]
    assert got == expected and type(got) is type(expected), (key, got)
  assert all(type(v) is int for v in config.data.eval_size)


def test_semi_camvid_recipe_config_args():
  from maskseg_jax import config_base
  from maskseg_jax.errors import ConfigError
  path = os.path.join(REPO, "configs", "semi.py")
  sup, uni, mm = (config_base.load_config(path, f"camvid,recipe,{v}") for v in ("supervised", "unimatch", "maskmatch"))
  cpu = config_base.load_config(path, "camvid,cpu,unimatch")
  sup32 = config_base.load_config(path, "camvid,recipe,supervised,32")
  assert (sup.semi.labeled_fraction, sup32.semi.labeled_fraction) == (1 / 8, 1 / 32)
  assert sup.train.steps == uni.train.steps == 3600 and uni.semi.warmup_steps == 2400
  assert (uni.data.crop_size, uni.model.width) == (cpu.data.crop_size, cpu.model.width)  # only the schedule moves
  assert (cpu.semi.warmup_steps, cpu.semi.ensemble_guard) == (0, "none")  # cpu_ keeps the papers' settings
  assert mm.semi.ensemble_guard == "confident" and uni.semi.ensemble_guard == "none"
  try:
    config_base.load_config(path, "camvid,huge,unimatch")
  except ConfigError as e:
    assert "'huge' is not an accepted value" in str(e) and "size: full|cpu|recipe" in str(e)
  else:
    raise AssertionError("a bad size prefix was accepted")


def _label_curve():
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import semi_label_curve
  return semi_label_curve


def test_label_curve_summary_gaps_and_table():
  curve = _label_curve()
  iou = {c: 10.0 for c in curve.CLASSES}
  runs = [dict(row=row, seed=s, miou=m, iou=iou) for row, ms in (("8", (30.0, 32.0, 34.0)), ("all", (37.0, 38.0, 39.0)))
          for s, m in enumerate(ms)]
  ref, full = curve.summarise(runs, reference="8")
  assert ref["mean"] == 32.0 and ref["std"] == 2.0 and "gap" not in ref
  assert full["gap"] == 6.0 and full["min_pairwise_gap"] == 3.0  # worst all seed 37 - best 1/8 seed 34
  assert abs(full["gap_se"] - (4 / 3 + 1 / 3) ** 0.5) < 1e-12
  table = curve.markdown([ref, full], "8", [0, 1, 2]).splitlines()
  assert table[2].startswith("| 1/8 | 30.0 | 32.0 | 34.0 | **32.0** ± 2.0 |")
  assert table[3].endswith("| +6.0 ± 1.3 | +3.0 |")


def test_label_curve_refuses_bad_rows_and_empty_folders(tmp_path):
  script = os.path.join(REPO, "experiments", "semi_label_curve.py")
  bad = subprocess.run([sys.executable, script, f"--workdir={tmp_path}", "--rows=8,half"], capture_output=True,
                       text=True, cwd=REPO)
  assert bad.returncode != 0 and "error: --rows entry 'half'" in bad.stderr
  empty = subprocess.run([sys.executable, script, f"--workdir={tmp_path}", "--only_trained"], capture_output=True,
                         text=True, cwd=REPO)
  assert empty.returncode != 0 and f"error: no finished run of 16000 steps under {tmp_path}" in empty.stderr
