"""`model.init_from` with ImageNet-style ResNet checkpoints (torchvision / timm key names, `.safetensors` and,
where PyTorch is importable, `.pth`) and with `encoder:` run folders.

The state dicts are built here in torchvision's names and OIHW shapes from the architecture's definition (not
from this project's model), so the test checks the mapping rather than restating it. The output match against
torchvision's own ResNet runs only where torch is installed (it is not a dependency)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import nnx

from maskseg_jax import pretrained
from maskseg_jax.errors import CheckpointError
from maskseg_jax.models.deeplabv3plus import DeepLabV3Plus
from maskseg_jax.models.resnet import ResNet
from maskseg_jax.models.unet import UNet

safetensors_numpy = pytest.importorskip("safetensors.numpy")

LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


def torchvision_state(depth: int, *, width: float = 1.0, deep_stem: bool = False, stem=(64, 64, 128),
                      seed: int = 0) -> dict[str, np.ndarray]:
  """A random torchvision-layout ResNet state dict (timm's `conv1.0/1/3/4/6` + `bn1` for the deep stem)."""
  rng = np.random.default_rng(seed)
  ch = lambda c: max(8, int(c * width))  # noqa: E731
  state = {}

  def conv(name, out_ch, in_ch, k):
    state[f"{name}.weight"] = rng.normal(0, math.sqrt(2.0 / (k * k * out_ch)), (out_ch, in_ch, k, k))

  def bn(name, c):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c)
    state[f"{name}.bias"] = rng.normal(0, 0.1, c)
    state[f"{name}.running_mean"] = rng.normal(0, 0.1, c)
    state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c)
    state[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

  if deep_stem:
    a, b, c = (ch(s) for s in stem)
    conv("conv1.0", a, 3, 3), bn("conv1.1", a), conv("conv1.3", b, a, 3), bn("conv1.4", b)
    conv("conv1.6", c, b, 3), bn("bn1", c)
    inplanes = c
  else:
    conv("conv1", ch(64), 3, 7), bn("bn1", ch(64))
    inplanes = ch(64)
  kind, layers = LAYERS[depth]
  for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
    p = ch(planes)
    out = p if kind == "basic" else 4 * p
    for j in range(n):
      pre = f"layer{i + 1}.{j}"
      stride = 2 if i > 0 and j == 0 else 1
      if kind == "basic":
        conv(f"{pre}.conv1", p, inplanes, 3), bn(f"{pre}.bn1", p), conv(f"{pre}.conv2", p, p, 3), bn(f"{pre}.bn2", p)
      else:
        conv(f"{pre}.conv1", p, inplanes, 1), bn(f"{pre}.bn1", p), conv(f"{pre}.conv2", p, p, 3)
        bn(f"{pre}.bn2", p), conv(f"{pre}.conv3", out, p, 1), bn(f"{pre}.bn3", out)
      if stride != 1 or inplanes != out:
        conv(f"{pre}.downsample.0", out, inplanes, 1), bn(f"{pre}.downsample.1", out)
      inplanes = out
  state["fc.weight"] = rng.normal(0, 0.01, (1000, inplanes))
  state["fc.bias"] = np.zeros(1000)
  return {k: v.astype(np.int64 if v.dtype == np.int64 else np.float32) for k, v in state.items()}


_STEM = {False: {"conv1": "stem/0/conv", "bn1": "stem/0/bn"},
         True: {"conv1.0": "stem/0/conv", "conv1.1": "stem/0/bn", "conv1.3": "stem/1/conv",
                "conv1.4": "stem/1/bn", "conv1.6": "stem/2/conv", "bn1": "stem/2/bn"}}
_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def expected_place(key: str, deep_stem: bool) -> tuple[str, bool]:
  """torch key -> (our variable path, is a conv kernel), by the rule the docs state."""
  module, leaf = key.rsplit(".", 1)
  path = _STEM[deep_stem].get(module) or module.replace(".", "/").replace("downsample/0", "downsample/conv") \
      .replace("downsample/1", "downsample/bn")
  is_conv = path.rsplit("/", 1)[-1].startswith("conv")
  return "backbone/" + path + "/" + ("kernel" if is_conv else _BN[leaf]), is_conv


def _variables(model) -> dict[str, np.ndarray]:
  out = {}
  for kind in (nnx.Param, nnx.BatchStat):
    out.update({k: np.asarray(v) for k, v in pretrained.flatten(nnx.state(model, kind)).items()})
  return out


def _check_landed(model, state: dict, deep_stem: bool, before: dict):
  after = _variables(model)
  placed = set()
  for key, value in state.items():
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
      continue
    name, is_conv = expected_place(key, deep_stem)
    want = value.transpose(2, 3, 1, 0) if is_conv else value
    np.testing.assert_array_equal(after[name], want, err_msg=key)
    placed.add(name)
  backbone = {k for k in after if k.startswith("backbone/")}
  assert placed == backbone  # every backbone variable came from the file
  for k in set(after) - backbone:  # and nothing else moved
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def _save(tmp_path, state, name="resnet.safetensors"):
  path = str(tmp_path / name)
  safetensors_numpy.save_file(state, path)
  return path


@pytest.mark.parametrize("arch", ["unet34", "deeplab50_deep"])
def test_torchvision_names_land_where_they_should(arch, tmp_path):
  if arch == "unet34":
    deep, model = False, UNet(6, depth=34, width=0.125, rngs=nnx.Rngs(0))
    state, saved = torchvision_state(34, width=0.125), None
  else:  # timm / UniMatch deep stem, saved through DDP (`module.` prefix)
    deep = True
    model = DeepLabV3Plus(6, depth=50, width=0.125, deep_stem=True, rngs=nnx.Rngs(0))
    state = torchvision_state(50, width=0.125, deep_stem=True)
    saved = {f"module.{k}": v for k, v in state.items()}
  before = _variables(model)
  report = pretrained.load_into(model, _save(tmp_path, saved or state))
  _check_landed(model, state, deep, before)
  assert report["loaded"] and all(k.startswith("backbone/") for k in report["loaded"])
  assert any(k.startswith(("head/", "classifier/")) for k in report["kept"])


@pytest.mark.parametrize("case, match", [
    ("timm_d_stem", r"'conv1\.0\.weight' \(as 'backbone/stem/0/conv/kernel'\) with shape \(3, 3, 3, 8\).*"
                    r"expects \(3, 3, 3, 16\).*deep_stem"),
    ("se_block", r"key 'layer1\.0\.se\.fc1\.weight'.*no counterpart"),
    ("stem_kind", r"7x7 stem.*model\.deep_stem=True; set --config\.model\.deep_stem=False"),
    ("deeper", r"holds 'layer1\.2\.conv1\.weight' \(and \d+ more"),
    ("width", r"'conv1\.weight' \(as 'backbone/stem/0/conv/kernel'\) with shape \(7, 7, 3, 32\).*expects \(7, 7, 3, 16\)"),
])
def test_mismatches_name_the_first_key(case, match, tmp_path):
  model_kw = dict(depth=18, width=0.25, deep_stem=False)
  state = torchvision_state(18, width=0.25)
  if case == "timm_d_stem":  # timm resnet*d stems are 32-32-64, ours 64-64-128
    model_kw["deep_stem"] = True
    state = torchvision_state(18, width=0.25, deep_stem=True, stem=(32, 32, 64))
  elif case == "se_block":
    state["layer1.0.se.fc1.weight"] = np.zeros((4, 16, 1, 1), np.float32)
  elif case == "stem_kind":
    model_kw["deep_stem"] = True
  elif case == "deeper":
    state = torchvision_state(34, width=0.25)
  elif case == "width":
    state = torchvision_state(18, width=0.5)
  model = UNet(6, **model_kw, rngs=nnx.Rngs(0))
  with pytest.raises(CheckpointError, match=match):
    pretrained.load_into(model, _save(tmp_path, state))


def test_pth_needs_torch_or_loads(tmp_path):
  state = torchvision_state(18, width=0.125)
  model = UNet(6, depth=18, width=0.125, rngs=nnx.Rngs(0))
  path = str(tmp_path / "resnet18.pth")
  try:
    import torch
  except ImportError:
    open(path, "wb").write(b"not read")
    with pytest.raises(CheckpointError, match=r"needs PyTorch .*\.safetensors"):
      pretrained.load_into(model, path)
    return
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}, "epoch": 3}, path)
  before = _variables(model)
  pretrained.load_into(model, path)
  _check_landed(model, state, False, before)


class _Holder(nnx.Module):
  def __init__(self, backbone):
    self.backbone = backbone


@pytest.mark.parametrize("depth, output_stride", [(18, 32), (50, 32), (50, 16)])
def test_matches_torchvision_outputs(depth, output_stride, tmp_path):
  """Same random weights (BN statistics randomized too), eval mode: every stage's features agree."""
  torch = pytest.importorskip("torch")
  tv = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  dilate = [False, False, output_stride == 16]
  net = getattr(tv.models, f"resnet{depth}")(weights=None, **({"replace_stride_with_dilation": dilate}
                                                                 if depth == 50 else {}))
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
        m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2.0)
  net.eval()
  path = str(tmp_path / f"resnet{depth}.pth")
  torch.save(net.state_dict(), path)
  model = _Holder(ResNet(depth, output_stride=output_stride, rngs=nnx.Rngs(0)))
  pretrained.load_into(model, path)
  x = np.random.default_rng(1).normal(size=(2, 64, 96, 3)).astype(np.float32)
  with torch.no_grad():
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    t = net.maxpool(net.relu(net.bn1(net.conv1(t))))
    ref = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
      t = layer(t)
      ref.append(t.numpy().transpose(0, 2, 3, 1))
  ours = jax.jit(lambda v: model.backbone(v, train=False))(x)
  worst = 0.0
  for name, r in zip(("stride4", "stride8", "stride16", "stride32"), ref):
    o = np.asarray(ours[name])
    assert o.shape == r.shape, name
    diff = float(np.max(np.abs(o - r)))
    worst = max(worst, diff / max(1.0, float(np.max(np.abs(r)))))
    np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-4 * max(1.0, float(np.max(np.abs(r)))), err_msg=name)
    print(f"resnet{depth} os{output_stride} {name}: max |ours - torchvision| = {diff:.3g} "
          f"(max |ref| {float(np.max(np.abs(r))):.3g})")
  assert worst < 1e-4
