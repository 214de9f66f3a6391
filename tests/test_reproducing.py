"""Every command in docs/reproducing.md builds its config through the real flag parser, with the settings and
step counts the page quotes."""

from __future__ import annotations

import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "reproducing.md")
ENV = {"$VOC": "/data/VOC2012", "$WEIGHTS": "/data/weights"}
VOC_AUG = 10582


def doc_text() -> str:
  with open(DOC) as f:
    return f.read()


def commands() -> list[list[str]]:
  """The argv (after `python -m maskseg_jax.main`) of every training command on the page."""
  out = []
  for line in doc_text().splitlines():
    if line.startswith("python -m maskseg_jax.main "):
      for var, value in ENV.items():
        line = line.replace(var, value)
      out.append(shlex.split(line)[3:])
  return out


def parse(argv: list[str]):
  """What `maskseg_jax.main` does with its flags: configs/<file>.py:<arg> plus typed `--config.*` overrides."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=["main"] + argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  fv(["main"] + argv)
  return fv.config, fv.workdir


def by_arg() -> dict[str, tuple]:
  out = {}
  for argv in commands():
    config, workdir = parse(argv)
    arg = next(a for a in argv if a.startswith("--config=")).split(":", 1)[1]
    out[workdir] = (arg, config)
  return out


def test_the_page_has_every_table_and_unique_run_folders():
  argvs = commands()
  workdirs = [next(a for a in argv if a.startswith("--workdir=")) for argv in argvs]
  assert len(argvs) == 15 and len(set(workdirs)) == len(workdirs)


@pytest.mark.parametrize("n", [92, 183, 366])
@pytest.mark.parametrize("variant", ["unimatch", "s4mim", "maskmatch"])
def test_semi_voc_rows_build_with_the_published_recipe(n, variant):
  arg, c = by_arg()[f"runs/voc{n}_{variant}"]
  assert arg == f"voc,{n},{variant}" and c.semi.variant == variant
  assert c.data.root == ENV["$VOC"] and c.model.init_from == "/data/weights/resnet101.pth"
  assert c.data.train_split == f"splits/voc/{n}/labeled.txt"
  assert c.semi.unlabeled_split == f"splits/voc/{n}/unlabeled.txt"
  assert (c.model.backbone, c.model.deep_stem, c.model.output_stride) == ("resnet101", True, 16)
  assert tuple(c.data.crop_size) == (321, 321) and c.data.batch_size == 8 and c.semi.tau == 0.95
  assert (c.optim.name, c.optim.lr, c.optim.head_lr_mult) == ("sgd", 0.001, 10.0)
  assert c.train.steps == 80 * ((VOC_AUG - n) // 8)
  assert (c.semi.l_rec > 0) == (variant == "s4mim") and (c.semi.l_mask > 0) == (variant == "maskmatch")


def test_quoted_step_counts_are_the_configs():
  rows = re.findall(r"^\| (92|183|366) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$", doc_text(), re.M)
  assert [r[0] for r in rows] == ["92", "183", "366"]
  runs = by_arg()
  for n, steps, _, _ in rows:
    assert runs[f"runs/voc{n}_unimatch"][1].train.steps == int(steps.replace(",", ""))


def test_selective_rows_build():
  runs = by_arg()
  for name, strategy in (("runs/voc_pre_selective", "selective"), ("runs/voc_pre_random", "random")):
    arg, c = runs[name]
    assert c.method == "selective_masking" and c.selective.strategy == strategy
    assert c.data.train_split == "splits/voc/train_aug.txt" and c.data.batch_size == 128
    assert c.selective.steps_per_stage == 8000 and c.selective.num_partitions == 10
  inits = {"runs/voc_ft_selective": "runs/voc_pre_selective", "runs/voc_ft_random": "runs/voc_pre_random",
           "runs/voc_ft_imagenet": "/data/weights/resnet34.pth", "runs/voc_ft_none": ""}
  for name, init in inits.items():
    arg, c = runs[name]
    assert arg == "voc,finetune" and c.method == "supervised" and c.model.init_from == init
    assert c.model.name == "unet" and c.model.deep_stem is False and c.train.steps == 20000
