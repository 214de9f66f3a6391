"""Loading trained weights into a freshly built model: fine-tuning, stage chaining, encoders, ImageNet ResNets.

`model.init_from` names one of:
- a run folder / checkpoints folder / selective-masking pretraining folder (its last finished stage): every
  variable by path except those under the attributes in `skip` (the output layer, which fine-tuning replaces:
  `head` in the U-Net, `classifier` in DeepLabV3+/FCN), which keep their fresh initialization;
- `encoder:` + such a folder: only the `backbone` (e.g. selective-masking U-Net ResNet-34 pretraining into a
  DeepLabV3+ ResNet-34 with the standard stem), the rest keeps its initialization;
- a torchvision / timm ResNet `.pth` or `.safetensors` state dict: mapped into the `backbone` (conv OIHW ->
  HWIO, BN running statistics, the 64-64-128 deep stem where shapes match; see `models.resnet.torch_variable`).
A variable the source lacks, or holds with another shape, or a backbone variable of the source the model has
no place for, is a CheckpointError naming it: silently keeping a random layer would make a result meaningless.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskseg_jax import checkpointing, weight_average
from maskseg_jax.errors import CheckpointError
from maskseg_jax.models import resnet

OUTPUT_LAYERS = ("head", "classifier")  # what fine-tuning replaces
_STAGE_DIR = re.compile(r"^stage_(\d+)$")


def _has_steps(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def resolve_checkpoint_dir(path: str) -> str:
  """The Orbax checkpoint folder of `path`: a run folder (its `checkpoints/`), a checkpoints folder itself, or
  a selective-masking pretraining folder (the `checkpoints/` of its last finished `stage_k`)."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise CheckpointError(f"model.init_from={path} does not exist; expected a run folder with checkpoints/")
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints")
  stages = sorted((int(m.group(1)), name) for name in os.listdir(path) if (m := _STAGE_DIR.match(name)))
  if stages:
    finished = [name for _, name in stages if os.path.isfile(os.path.join(path, name, "done"))]
    if not finished:
      raise CheckpointError(f"selective-masking pretraining folder {path} has no finished stage (no "
                            "stage_k/done); finish the pretraining run first")
    if finished[-1] != stages[-1][1]:
      raise CheckpointError(f"selective-masking pretraining folder {path} is unfinished: {finished[-1]} is the "
                            f"last finished stage but {stages[-1][1]} exists; finish the pretraining run first")
    return os.path.join(path, finished[-1], "checkpoints")
  if _has_steps(path):
    return path
  raise CheckpointError(f"no checkpoint at {path}: expected a run folder with checkpoints/, a checkpoints folder "
                        "with numbered steps, or a selective-masking pretraining folder with stage_k/ folders")


def read_weights(path: str) -> tuple[dict, dict, str]:
  """-> (params, batch_stats, checkpoint folder): the last step of `path`'s checkpoint, as saved (params: the
  weight average when the run kept one)."""
  directory = resolve_checkpoint_dir(path)
  ckpt = checkpointing.Checkpointer(directory)
  try:
    if ckpt.latest_step() is None:
      raise CheckpointError(f"no checkpoint in {directory} (model.init_from={path})")
    state, _ = ckpt.restore_as_saved()
  finally:
    ckpt.close()
  missing = [k for k in ("params", "batch_stats") if k not in state]
  if missing:
    raise CheckpointError(f"checkpoint in {directory} has no {missing} in its state; expected a model checkpoint")
  state = weight_average.for_inference(state)  # a run trained with train.ema_decay hands on its average
  return state["params"], state["batch_stats"], directory


def _key(entry) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def _name(path) -> str:
  """'backbone/layer1/0/conv1/kernel' for a tree path; the trailing 'value' of NNX variables is dropped."""
  keys = [_key(k) for k in path]
  if keys and keys[-1] == "value":
    keys = keys[:-1]
  return "/".join(keys)


def flatten(tree) -> dict[str, jax.Array]:
  """{variable path: array} of a params/batch-stats tree, saved (nested dicts) or live (nnx.State) alike."""
  return {_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ------------------------------------------------------------------------------------------ torch files

def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    from safetensors.numpy import load_file
  except ImportError as e:
    raise CheckpointError(f"reading {path} needs the safetensors package: pip install safetensors") from e
  return load_file(path)


def _read_torch_pickle(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise CheckpointError(f"reading {path} needs PyTorch (pip install torch), which maskseg_jax does not depend "
                          "on; or convert it once to .safetensors (safetensors.torch.save_file) and pass that") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  for wrapper in ("state_dict", "model"):  # training scripts often save {"state_dict": ..., "epoch": ...}
    if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  if not isinstance(state, dict):
    raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items() if hasattr(v, "numpy")}


TORCH_READERS = {".safetensors": _read_safetensors, ".pth": _read_torch_pickle, ".pt": _read_torch_pickle,
                 ".bin": _read_torch_pickle}
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.")  # DDP, timm/smp wrappers, UniMatch's backbone.


def is_torch_file(path: str) -> bool:
  return os.path.splitext(str(path))[1].lower() in TORCH_READERS


def _unwrap(state: dict) -> dict:
  """Strips a prefix every key shares (DDP's `module.`, `backbone.` of a segmenter checkpoint), repeatedly."""
  while state:
    prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    if prefix is None:
      return state
    state = {k[len(prefix):]: v for k, v in state.items()}
  return state


def read_torch_backbone(path: str, *, deep_stem: bool) -> dict[str, np.ndarray]:
  """{'backbone/<path>': array in this project's layout} of a torchvision / timm ResNet checkpoint.

  The ImageNet classifier (`fc.*`) and BN step counters are dropped; any other key that has no counterpart in
  this ResNet is a CheckpointError naming it, so an SE block or a ResNet-D avg-pool shortcut never half-loads.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f"model.init_from={path} does not exist; expected a torchvision/timm ResNet checkpoint")
  state = _unwrap(TORCH_READERS[os.path.splitext(path)[1].lower()](path))
  has_deep = resnet.torch_deep_stem(state)
  if has_deep != deep_stem:
    want = "True" if has_deep else "False"
    raise CheckpointError(f"{path} has a {'deep 3-conv' if has_deep else '7x7'} stem (conv1.0.weight "
                          f"{'present' if has_deep else 'absent'}) but the model was built with "
                          f"model.deep_stem={deep_stem}; set --config.model.deep_stem={want}")
  out = {}
  for key, value in state.items():
    if resnet.TORCH_IGNORED.search(key):
      continue
    mapped = resnet.torch_variable(key, deep_stem=deep_stem)
    if mapped is None:
      raise CheckpointError(f"{path}: key {key!r} (shape {tuple(np.shape(value))}) has no counterpart in this "
                            "project's ResNet (torchvision v1.5 layout, optional 64-64-128 deep stem); "
                            "SE, ResNet-D avg-pool shortcuts and other variants are not supported")
    name, kind = mapped
    out[f"backbone/{name}"] = (resnet.torch_to_flax(np.asarray(value), kind), key)
  return out


# ------------------------------------------------------------------------------------------ loading

ENCODER_PREFIX = "encoder:"  # model.init_from="encoder:RUN": only the backbone, into another model type


def parse_init_from(spec: str) -> tuple[str, bool]:
  """'encoder:PATH' -> (PATH, True); 'PATH' -> (PATH, whether PATH is a torch file: those hold a backbone only)."""
  spec = str(spec)
  if spec.startswith(ENCODER_PREFIX):
    return spec[len(ENCODER_PREFIX):], True
  return spec, is_torch_file(spec)


def _strip_segmenter(saved: dict, model: nnx.Module) -> dict:
  """A semi-supervised run saves its segmenter under `segmenter/`: read it into a bare segmenter."""
  if hasattr(model, "segmenter") or not any(k.startswith("segmenter/") for k in saved):
    return saved
  return {k[len("segmenter/"):]: v for k, v in saved.items() if k.startswith("segmenter/")}


def _saved_weights(path: str, model: nnx.Module) -> tuple[dict, str]:
  """-> ({variable path: (array, name in the file)}, description of the source)."""
  if is_torch_file(path):
    backbone = getattr(model, "backbone", None)
    if backbone is None:
      raise CheckpointError(f"model.init_from={path} is a ResNet checkpoint, but the model has no `backbone`")
    return read_torch_backbone(os.path.abspath(os.path.expanduser(path)), deep_stem=backbone.deep_stem), path
  params, stats, directory = read_weights(path)
  saved = _strip_segmenter({**flatten(params), **flatten(stats)}, model)
  return {k: (v, k) for k, v in saved.items()}, directory


_HINTS = {"stem": " (model.deep_stem or the stem widths differ: the deep stem here is 64-64-128, timm's "
                  "resnet*d stem 32-32-64)", "layer": " (different model.backbone depth or model.width?)"}


def _network_position(name: str) -> tuple:
  """Sort key putting variables in forward order (stem, layer1..4, blocks by number, conv before bn), so an
  error names the mismatch nearest the input, whatever order the file stores its keys in."""
  def part(p: str):
    if p.isdigit():
      return (0, int(p), "")
    if p == "stem":
      return (0, -1, "")
    return (1, 0 if p.startswith("conv") else 1, p)
  return tuple(part(p) for p in name.split("/"))


def _hint(name: str) -> str:
  part = name.split("/")[1] if name.startswith("backbone/") and "/" in name else ""
  return _HINTS.get(part, " (different model.width, backbone or channels?)")


def load_into(model: nnx.Module, path: str, *, skip: Sequence[str] = OUTPUT_LAYERS) -> dict[str, list[str]]:
  """Copies params and batch statistics from `path` into `model` (in place).

  `path` is a run folder (its last checkpoint), a selective-masking pretraining folder (its last stage), a
  torchvision / timm ResNet `.pth` / `.safetensors` file, or `encoder:` + a run folder. Torch files and
  `encoder:` load the `backbone` only (e.g. a U-Net pretraining run into DeepLabV3+ with the same ResNet);
  otherwise every variable but those under a top-level attribute in `skip` is loaded. Everything that is
  loaded must match: the first variable the source lacks or holds with another shape, and the first backbone
  variable of the source that the model has no place for, is a CheckpointError naming it. Returns
  {"loaded": [...], "kept": [...]} variable paths.
  """
  source, encoder_only = parse_init_from(path)
  saved, where = _saved_weights(source, model)
  report = {"loaded": [], "kept": []}
  problems = []  # (network position, message): the one nearest the input is reported

  def pick(tree_path, leaf):
    name = _name(tree_path)
    top = name.split("/")[0]
    if top in skip or (encoder_only and top != "backbone"):
      report["kept"].append(name)
      return leaf
    if name not in saved:
      hint = (" (was it written by another model type? Use model.init_from='encoder:PATH' to load only the "
              "backbone)") if top != "backbone" else _hint(name)
      problems.append((_network_position(name),
                       f"checkpoint {where} has no variable {name!r} that the model needs{hint}"))
      return leaf
    value, key = saved[name]
    if tuple(value.shape) != tuple(leaf.shape):
      shown = f"{key!r} (as {name!r})" if key != name else repr(name)
      problems.append((_network_position(name), f"checkpoint {where} holds {shown} with shape {tuple(value.shape)}, the "
                                    f"model expects {tuple(leaf.shape)}{_hint(name)}"))
      return leaf
    report["loaded"].append(name)
    return jnp.asarray(np.asarray(value), leaf.dtype)

  updates = [jax.tree_util.tree_map_with_path(pick, nnx.state(model, kind)) for kind in (nnx.Param, nnx.BatchStat)]
  if problems:
    raise CheckpointError(min(problems, key=lambda p: p[0])[1])
  loaded = set(report["loaded"])
  unused = [saved[k][1] for k in sorted(saved, key=_network_position)
            if k.startswith("backbone/") and k not in loaded]
  if unused and (encoder_only or "backbone" not in skip):
    raise CheckpointError(f"checkpoint {where} holds {unused[0]!r} (and {len(unused) - 1} more backbone "
                          "variables) that the model has no place for (a deeper backbone than model.backbone?)")
  for update in updates:
    nnx.update(model, update)
  return report
