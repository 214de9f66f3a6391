"""The L-MAE experiment scripts at a minuscule CamVid scale: ablation table, reuse, label augmentation.

The ablation run is shared: label augmentation reuses its baseline as the completion model, as the real
experiment does. Both read CamVid and must leave every file of it untouched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import fixtures
import jax
import numpy as np
import pytest
from scipy import ndimage

from maskseg_jax.data.file_layouts import CAMVID_DEFAULT_ROOT
from maskseg_jax.data.sources import read_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_camvid = pytest.mark.skipif(not os.path.isdir(CAMVID_DEFAULT_ROOT),
                                  reason="../shared/data/camvid is not beside the checkout")


def load_experiment(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def camvid_snapshot() -> dict:
  """Every file under the CamVid root: size and mtime; labels and split files also by content."""
  out = {}
  for folder, _, files in os.walk(CAMVID_DEFAULT_ROOT):
    for f in files:
      path = os.path.join(folder, f)
      st = os.stat(path)
      digest = hashlib.sha1(open(path, "rb").read()).hexdigest() if f.endswith((".png", ".txt")) else ""
      out[os.path.relpath(path, CAMVID_DEFAULT_ROOT)] = (st.st_size, st.st_mtime_ns, digest)
  return out


def cache_flag() -> str:
  return f"--xla_cache={jax.config.jax_compilation_cache_dir or ''}"


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
  """The ablation script on 16 CamVid images, groups `ips` and `ratio` (ratio: only the shared baseline)."""
  before = camvid_snapshot()
  workdir = str(tmp_path_factory.mktemp("ablations"))
  results = os.path.join(workdir, "results", "ablations.md")
  report = load_experiment("lmae_ablations").main([
      f"--workdir={workdir}", "--dataset=camvid", "--tiny", "--steps=2", "--groups=ips,ratio", "--ratios=",
      f"--results={results}", cache_flag()])
  return {"workdir": workdir, "report": report, "results": results, "camvid": before}


@needs_camvid
def test_ablation_table_shares_the_baseline(ablation):
  report = ablation["report"]
  assert report["groups"] == {"ips": ["baseline", "mask_token"], "ratio": ["baseline"]}
  assert set(report["runs"]) == {"baseline", "mask_token"}  # the baseline is trained once
  for (run,) in report["runs"].values():  # one seed each
    s = run["scalars"]
    for prefix in ("val", "val_random"):
      best = max(s[f"{prefix}/nearest/pa_miou"], s[f"{prefix}/geodesic/pa_miou"])
      assert s[f"{prefix}/margin_pa_miou"] == pytest.approx(s[f"{prefix}/pa_miou"] - best, abs=1e-9)
    assert not run["reused"] and run["seconds"] > 0
  lines = report["markdown"].splitlines()
  assert lines[0].startswith("| group | variant | setting | PA-mIoU BF | mIoU BF | PA-mIoU random |")
  assert [line.split(" | ")[:2] for line in lines[2:]] == [["| ips", "baseline"], ["| ips", "mask_token"],
                                                           ["| ratio", "baseline"], ["| fill", "geodesic"],
                                                           ["| fill", "nearest"]]
  assert all(line.count("|") == 12 for line in lines)
  md = open(ablation["results"]).read()
  assert "--groups=ips,ratio" in md and report["markdown"] in md
  config = json.load(open(os.path.join(ablation["workdir"], "mask_token", "config.json")))
  assert config["model"]["ips"] is False and config["train"]["steps"] == 2


@needs_camvid
def test_ablation_rerun_reuses_finished_runs(ablation):
  again = load_experiment("lmae_ablations").main([
      f"--workdir={ablation['workdir']}", "--dataset=camvid", "--tiny", "--steps=2", "--groups=ips,ratio",
      "--ratios=", "--xla_cache="])
  assert all(run["reused"] for seeds in again["runs"].values() for run in seeds)
  assert again["markdown"].splitlines()[2:] == ablation["report"]["markdown"].splitlines()[2:]


@needs_camvid
def test_label_augmentation_degrades_completes_and_trains(ablation, tmp_path):
  report = load_experiment("label_augmentation").main([
      f"--workdir={tmp_path}", "--dataset=camvid", "--tiny", f"--lmae_root={ablation['workdir']}",
      "--lmae_steps=2", "--ratios=0.5", "--seg_steps=2", "--models=fcn", "--seeds=2", cache_flag()])
  assert report["lmae"]["0.5"]["reused"]  # the ablation's baseline completes the labels
  data = tmp_path / "data"
  degraded, completed, nearest = (data / k / "labels" for k in ("degraded", "completed", "nearest"))
  names = sorted(os.listdir(degraded))
  assert len(names) == 16 and sorted(os.listdir(completed)) == names == sorted(os.listdir(nearest))
  assert len(os.listdir(data / "completed" / "images")) == 16 and len(os.listdir(data / "nearest" / "images")) == 16
  # 1/8 scale: 16 px tiles at the training scale are 128 px tiles in the 360x480 files.
  assert report["degrade"]["patch"] == 128 and report["degrade"]["to"] == 255
  for name in names[:4]:
    truth = read_label(os.path.join(CAMVID_DEFAULT_ROOT, "SegmentationClass", name))
    d, c, f = read_label(degraded / name), read_label(completed / name), read_label(nearest / name)
    tiles = [(y, x) for y in range(0, 360, 128) for x in range(0, 480, 128)]
    voided = [t for t in tiles if (d[t[0]:t[0] + 128, t[1]:t[1] + 128] == 255).all()
              and (truth[t[0]:t[0] + 128, t[1]:t[1] + 128] != 255).any()]
    assert len(voided) == 6  # half of the 12 tiles (each holds some labelled pixel)
    kept = d != 255
    assert np.array_equal(d[kept], truth[kept]) and np.array_equal(c[kept], d[kept])
    # The nearest arm: every void pixel takes the label of the nearest labelled pixel of the degraded label.
    _, (rows, cols) = ndimage.distance_transform_edt(~kept, return_indices=True)
    assert np.array_equal(f, d[rows, cols])
  q = report["label_quality"]
  assert q["completed"]["void_fraction"] < q["degraded"]["void_fraction"]
  assert q["nearest"]["void_fraction"] == 0.0 and q["nearest"]["pixel_acc"] > q["degraded"]["pixel_acc"]
  comps = report["completions"]
  assert list(comps) == ["nearest", "completed"]
  comp = comps["completed"]
  assert comp["files"] == 16 and comp["changed_pixels"] > 0 and comp["routed_to_ratio"] == {"0.5": 16}
  assert comps["nearest"]["method"] == "nearest" and comps["nearest"]["routed_to_ratio"] == {}
  assert comps["nearest"]["changed_pixels"] == sum(int((read_label(degraded / n) == 255).sum()) for n in names)
  arms = report["segmenters"]
  assert set(arms) == {"fcn_degraded", "fcn_nearest", "fcn_completed", "fcn_full"}
  for arm in arms.values():
    vals = [r["scalars"]["val/miou"] for r in arm["runs"]]
    assert len(vals) == 2 and arm["mean"] == pytest.approx(np.mean(vals))
    assert arm["half_range"] == pytest.approx((max(vals) - min(vals)) / 2)
  # Seed 0 keeps the single-seed folder; seed 1 is its own run. The folder-trained runs validate on CamVid val.
  for folder, seed in (("fcn_completed", 0), ("fcn_completed_s1", 1)):
    config = json.loads(json.load(open(tmp_path / folder / "ablation.json"))["config"])
    assert config["seed"] == seed
    assert (config["data"]["name"], config["data"]["val_name"]) == ("folder", "camvid")
  assert any(k.startswith("val/iou/road") for k in arms["fcn_completed"]["runs"][0]["scalars"])
  lines = report["markdown"].splitlines()
  assert lines[0] == ("| training labels | FCN val mIoU (2 seeds, ± half-range) | labels mIoU vs truth | "
                      "labels pixel acc | labels void % |")
  assert [line.split(" | ")[0] for line in lines[2:6]] == ["| degraded", "| nearest", "| completed", "| full"]
  assert " ± " in lines[2]
  assert lines[-2].startswith("nearest fill: 16 labels") and lines[-1].startswith("L-MAE completion: 16 labels")

  # --lmae_run: the given run completes (no training); only the arm whose labels changed is retrained.
  again = load_experiment("label_augmentation").main([
      f"--workdir={tmp_path}", "--dataset=camvid", "--tiny", f"--lmae_run={ablation['workdir']}/baseline",
      "--seg_steps=2", "--models=fcn", "--seeds=1", "--labels=degraded,completed", cache_flag()])
  assert again["lmae"] == {f"{ablation['workdir']}/baseline": {"run": f"{ablation['workdir']}/baseline",
                                                              "reused": True}}
  assert again["completions"]["completed"]["models"] == [os.path.abspath(f"{ablation['workdir']}/baseline")]
  assert again["segmenters"]["fcn_degraded"]["runs"][0]["reused"]
  assert not again["segmenters"]["fcn_completed"]["runs"][0]["reused"]
  assert camvid_snapshot() == ablation["camvid"]


def test_val_name_reads_val_from_another_dataset(tmp_path):
  from maskseg_jax import config_checks
  from maskseg_jax.errors import ConfigError
  from maskseg_jax.methods import segmentation
  fixtures.make_folder_fixture(tmp_path, n=3, num_classes=6)
  c = fixtures.load_config("configs/supervised.py", None, **{
      "data.name": "folder", "data.root": str(tmp_path), "data.val_name": "synthetic",
      "data.synthetic.num_val": 5})
  train_src, val_src = segmentation.load_sources(c)
  assert (train_src.name, len(train_src)) == ("folder", 3) and (val_src.name, len(val_src)) == ("synthetic", 5)
  c2 = fixtures.load_config("configs/supervised.py", None, **{"data.val_name": "nope"})
  with pytest.raises(ConfigError, match="data.val_name"):
    config_checks.check_dataset_name(c2)


# The first recipe as `--set` overrides of camvid,cpu (experiments/results/lmae_recipe.md) and what was measured on it.
FIRST_RECIPE = {"model.prior": "nearest", "model.refine_width": 16, "optim.schedule": "cosine",
                "optim.warmup_steps": 100}
FIRST_RECIPE_VARIANTS = ["baseline", "geodesic_prior", "lovasz", "lovasz_3", "wider_vit", "lovasz_wider", "no_prior",
                         "no_refine", "no_extensions"]


@pytest.mark.parametrize("config_arg,extra,variants", [("recipe", {}, []),
                                                       ("cpu", FIRST_RECIPE, FIRST_RECIPE_VARIANTS)])
def test_every_extension_variant_changes_its_recipe(config_arg, extra, variants):
  """No row of an extensions table may silently be the baseline again (e.g. a switch the recipe already has)."""
  abl = load_experiment("lmae_ablations")
  names = abl.group_variants("extensions", [], variants)
  assert names == (variants or abl.EXTENSION_VARIANTS)
  configs = {n: abl.variant_config(n, "camvid", 10, config_arg=config_arg, extra=extra).to_json(sort_keys=True)
             for n in names}
  assert names[0] == "baseline" and len(set(configs.values())) == len(names)
  base = abl.variant_config("baseline", "camvid", 10, config_arg=config_arg, extra=extra)
  if config_arg == "recipe":
    assert (base.lmae.lovasz_weight, base.model.enc_depth, base.model.enc_dim, base.lmae.fill_blend, base.optim.lr,
            base.optim.grad_clip, base.lmae.mirror_average) == (3.0, 4, 192, 0.3, 4e-3, 1.0, True)
    assert tuple(base.lmae.progressive_reveal) == ()  # one pass: chosen on train@dev
  else:
    assert (base.lmae.lovasz_weight, base.model.enc_depth, base.lmae.fill_blend, base.model.prior,
            base.optim.schedule) == (0.0, 0, 0.0, "nearest", "cosine")
  assert abl.setting_of("baseline", "cpu", ["model.prior=nearest"]) == \
      "lmae.py:camvid,cpu + model.prior=nearest, ratio 0.5"
  with pytest.raises(SystemExit, match="unknown variant"):
    abl.group_variants("extensions", [], ["baseline", "lovasz_9"])
