"""The code layout holds: one config file per method family whose every arg loads, and imports only run downward
(data/models/losses/metrics <- methods <- train/main/commands; a method folder imports no other method folder)."""

from __future__ import annotations

import ast
import importlib
import itertools
import os
import pathlib

import pytest

from maskseg_jax import config_base
from maskseg_jax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "maskseg_jax"
FAMILIES = ("lmae", "semi", "selective", "supervised")
COMMANDS = {"maskseg_jax.train", "maskseg_jax.main", "maskseg_jax.complete"}
METHOD_FOLDERS = ("lmae", "semi_supervised", "selective_masking", "supervised")


def _family(name):
  return importlib.import_module(f"maskseg_jax.configs.{name}")


def test_one_config_file_per_family_packaged_and_reexported_by_the_checkout():
  from maskseg_jax import configs
  names = sorted([f"{f}.py" for f in FAMILIES] + ["lmae_voc.py"])
  assert configs.names() == names
  assert sorted(p.name for p in (REPO / "configs").glob("*.py")) == names
  for name in names:  # the checkout's configs/ are one-line re-exports: one copy of each config only
    assert len((REPO / "configs" / name).read_text().splitlines()) == 2
    assert config_base.load_config(str(REPO / "configs" / name)).to_dict() == config_base.load_config(name).to_dict()


@pytest.mark.parametrize("name", FAMILIES)
def test_every_documented_arg_loads_and_every_combination_is_defined_or_refused(name):
  family = _family(name)
  doc = family.__doc__
  for arg in family.ARGS:
    config = family.get_config(arg)
    assert config.data.name in (arg.split(",")[0] if arg and arg.split(",")[0] in family.AXES["dataset"]
                                else family.AXES["dataset"][0])
  for dataset in family.AXES["dataset"]:
    assert dataset in doc  # each dataset is documented in the file's docstring
  # every combination of the named axes: a config, or a ConfigError naming the file (never another exception)
  loaded = 0
  for combo in itertools.product(*family.AXES.values()):
    try:
      family.get_config(",".join(combo))
      loaded += 1
    except ConfigError as e:
      assert f"configs/{name}.py arg" in str(e)
  assert loaded >= len(family.AXES["dataset"])


@pytest.mark.parametrize("name,arg,fragment", [
    ("semi", "camvid,huge", "'huge' is not an accepted value (dataset: voc|cityscapes|synthetic|camvid"),
    ("semi", "camvid,voc", "two dataset values, 'camvid' and 'voc'"),
    ("semi", "voc,100", "VOC labeled split 100"),
    ("lmae", "synthetic,recipe", "size recipe exists for camvid only"),
    ("lmae", "camvid,1.5", "mask ratio 1.5"),
    ("selective", "camvid,finetune,random", "a masking strategy belongs to pretraining"),
    ("supervised", "camvid,92", "a labelled split size is for voc only")])
def test_refused_args_name_the_token(name, arg, fragment):
  with pytest.raises(ConfigError, match="configs/") as info:
    config_base.load_config(name, arg)
  assert fragment in str(info.value)


def test_flagship_alias_is_the_voc_member_of_the_family():
  alias = config_base.load_config("lmae_voc", "0.6")
  assert alias.to_dict() == config_base.load_config("lmae", "voc,0.6").to_dict()
  assert alias.lmae.mask_ratio == 0.6 and alias.data.name == "voc"


def test_semi_labeled_fraction_from_the_arg():
  one_32 = config_base.load_config("semi", "camvid,recipe,unimatch,32")
  assert one_32.semi.labeled_fraction == 1 / 32 and one_32.train.steps == 3600


def _imports(path: pathlib.Path) -> set[str]:
  """maskseg_jax modules `path` imports (module-level and inside functions)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskseg_jax"):
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith("maskseg_jax"))
  return out


def _module(path: pathlib.Path) -> str:
  return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def test_imports_run_downward():
  upward = []
  for path in PACKAGE.rglob("*.py"):
    module, deps = _module(path), _imports(path)
    in_methods = module.startswith("maskseg_jax.methods")
    above_methods = module in COMMANDS or module.startswith("maskseg_jax.configs.")  # configs pick method sections
    for dep in deps:
      if dep in COMMANDS and module not in COMMANDS:
        upward.append(f"{module} imports the command {dep}")
      if dep.startswith("maskseg_jax.methods") and not (in_methods or above_methods) \
          and module != "maskseg_jax.methods":
        upward.append(f"{module} imports {dep} (below methods/)")
      for folder in METHOD_FOLDERS:
        own = f"maskseg_jax.methods.{folder}"
        if dep.startswith(own + ".") and in_methods and not module.startswith(own) and module != "maskseg_jax.methods":
          upward.append(f"{module} imports {dep} (another method's folder)")
  assert not upward, "\n".join(sorted(upward))


def test_every_method_folder_is_a_registered_task():
  from maskseg_jax.methods import METHODS
  assert sorted(METHODS) == sorted(METHOD_FOLDERS)
  for name, module in METHODS.items():
    assert module == f"maskseg_jax.methods.{name}.task"
    assert (PACKAGE / "methods" / name / "task.py").is_file()
    assert os.path.isfile(PACKAGE / "methods" / name / "__init__.py")
