"""Shape and behaviour tests of the segmentation models at tiny width on CPU.

Models are built once per module (parameter init compiles per shape, the slow part on CPU) and cloned by tests
that mutate them. Shape-only checks use `nnx.eval_shape`, which neither allocates nor runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maskseg_jax.config_base import base_config
from maskseg_jax.errors import ConfigError
from maskseg_jax.models import MODELS, build_model, replace_head
from maskseg_jax.models.resnet import ResNet, logits_at

NUM_CLASSES = 5
WIDTH = 0.125


def _config(name: str, **overrides):
  c = base_config().model
  c.name = name
  c.backbone = "resnet18"
  c.width = WIDTH
  for k, v in overrides.items():
    c[k] = v
  return c


def _images(h: int, w: int, seed: int = 0, batch: int = 2) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, h, w, 3), jnp.float32)


def _param_count(module: nnx.Module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _snapshot(tree):
  """Copies a state's values: `nnx.state` returns the model's live Variables, which later calls mutate."""
  return jax.tree.map(np.array, tree)


def _equal_trees(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


@pytest.fixture(scope="module")
def models():
  return {name: build_model(_config(name), NUM_CLASSES, nnx.Rngs(0)) for name in ("deeplabv3plus", "unet", "fcn")}


# ResNet ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,expected", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032),
                                            (101, 42_500_160)])
def test_resnet_parameter_count_matches_torchvision(depth, expected):
  # torchvision's resnetXX without the fc layer; BatchNorm running stats are not parameters there either.
  model = nnx.eval_shape(lambda: ResNet(depth, width=1.0, deep_stem=False, output_stride=32, rngs=nnx.Rngs(0)))
  assert _param_count(model) == expected


def test_resnet_deep_stem_adds_the_three_conv_stem():
  std = nnx.eval_shape(lambda: ResNet(50, deep_stem=False, rngs=nnx.Rngs(0)))
  deep = nnx.eval_shape(lambda: ResNet(50, deep_stem=True, rngs=nnx.Rngs(0)))
  assert len(deep.stem) == 3 and deep.stem[2].conv.out_features == 128
  assert _param_count(deep) > _param_count(std)


@pytest.mark.parametrize("output_stride,expected", [
    (32, {"stride4": 16, "stride8": 8, "stride16": 4, "stride32": 2}),
    (16, {"stride4": 16, "stride8": 8, "stride16": 4, "stride32": 4}),
    (8, {"stride4": 16, "stride8": 8, "stride16": 8, "stride32": 8}),
])
def test_resnet_output_stride_uses_dilation(output_stride, expected):
  model = nnx.eval_shape(lambda: ResNet(50, width=WIDTH, deep_stem=True, output_stride=output_stride,
                                        rngs=nnx.Rngs(0)))
  feats = nnx.eval_shape(lambda m, x: m(x, train=False), model, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert {k: v.shape[1] for k, v in feats.items()} == expected
  assert {k: v.shape[3] for k, v in feats.items()} == model.channels
  # Dilation keeps the parameters: only strides change, so the checkpoints stay interchangeable.
  ref = nnx.eval_shape(lambda: ResNet(50, width=WIDTH, deep_stem=True, output_stride=32, rngs=nnx.Rngs(0)))
  assert _param_count(model) == _param_count(ref)


def test_resnet_rejects_bad_depth_and_output_stride():
  with pytest.raises(ConfigError, match="output_stride=4"):
    ResNet(18, output_stride=4, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="152"):
    ResNet(152, rngs=nnx.Rngs(0))


# All segmenters ----------------------------------------------------------------------------------------------------

NAMES = ["deeplabv3plus", "unet", "fcn"]


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_dtype(models, name):
  model = models[name]
  y = model(_images(48, 64), train=False)  # non-square and not a multiple of 32
  assert y.shape == (2, 48, 64, NUM_CLASSES) and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))
  square = nnx.eval_shape(lambda m, x: m(x, train=False), model, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
  assert square.shape == (2, 64, 64, NUM_CLASSES) and square.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_batch_stats_update_only_in_train_mode(models, name):
  model = nnx.clone(models[name])
  x = _images(48, 64, seed=1)
  before = _snapshot(nnx.state(model, nnx.BatchStat))
  model(x, train=False)
  assert _equal_trees(before, _snapshot(nnx.state(model, nnx.BatchStat)))
  model(x, train=True)
  after = _snapshot(nnx.state(model, nnx.BatchStat))
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not bool(jnp.array_equal(a, b)), before, after))
  assert all(changed), "every BatchNorm (backbone and decoder) should update its statistics in train mode"


@pytest.mark.parametrize("name", NAMES)
def test_dropout_follows_reseed_even_when_built_from_a_single_seed(models, name):
  # The models are built from nnx.Rngs(0) (no 'dropout' stream); reseed(dropout=...) must still drive dropout.
  model = nnx.clone(models[name])
  x = _images(48, 64, seed=2)
  nnx.reseed(model, dropout=jax.random.key(1))
  y1 = model(x, train=True)
  nnx.reseed(model, dropout=jax.random.key(1))
  y2 = model(x, train=True)
  nnx.reseed(model, dropout=jax.random.key(2))
  y3 = model(x, train=True)
  np.testing.assert_array_equal(y1, y2)
  assert not np.allclose(y1, y3)
  # Eval mode is deterministic and ignores the dropout stream.
  np.testing.assert_array_equal(model(x, train=False), model(x, train=False))


@pytest.mark.parametrize("name", NAMES)
def test_split_merge_round_trip(models, name):
  model = models[name]
  x = _images(48, 64, seed=3)
  graphdef, state = nnx.split(model)
  restored = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
  np.testing.assert_array_equal(restored(x, train=False), model(x, train=False))


def test_pure_jitted_train_forward_returns_updated_stats(models):
  """The train-step pattern: split once, merge inside jit, return the new state; stats must come back."""
  model = models["deeplabv3plus"]
  graphdef, state = nnx.split(model)
  x = _images(48, 64, seed=4)

  @jax.jit
  def step(state, x, key):
    m = nnx.merge(graphdef, state)
    nnx.reseed(m, dropout=key)
    y = m(x, train=True)
    return y, nnx.state(m)

  y, new_state = step(state, x, jax.random.key(0))
  assert y.shape == (2, 48, 64, NUM_CLASSES)
  old_stats, new_stats = _snapshot(nnx.state(model, nnx.BatchStat)), nnx.filter_state(new_state, nnx.BatchStat)
  assert not _equal_trees(old_stats, new_stats)
  assert _equal_trees(nnx.state(model, nnx.Param), nnx.filter_state(new_state, nnx.Param))


# DeepLabV3+ --------------------------------------------------------------------------------------------------------

def test_deeplab_parts_compose_to_call(models):
  model = models["deeplabv3plus"]
  x = _images(48, 64, seed=5)
  low, high = model.encode(x, train=False)
  fused = model.decode(low, high, train=False)
  assert low.shape[1:3] == (12, 16) and high.shape[1:3] == (3, 4)  # stride 4 and output stride 16
  assert fused.shape == (2, 12, 16, model.feature_channels)
  logits = model.classify(fused)
  assert logits.shape == (2, 12, 16, NUM_CLASSES)
  np.testing.assert_allclose(logits_at(logits, (48, 64)), model(x, train=False), rtol=1e-6, atol=1e-6)


def test_deeplab_perturb_drops_whole_channels(models):
  model = nnx.clone(models["deeplabv3plus"])
  nnx.reseed(model, dropout=jax.random.key(0))
  low, high = jnp.ones((2, 12, 16, 16)), jnp.ones((2, 3, 4, 64))
  for y in model.perturb(low, high):
    per_channel = y.reshape(y.shape[0], -1, y.shape[-1])
    # Dropout2d(0.5): each (sample, channel) is all zero or all scaled by 2.
    assert bool(jnp.all((per_channel.min(axis=1) == per_channel.max(axis=1))))
    assert set(np.unique(np.asarray(per_channel))) == {0.0, 2.0}


@pytest.mark.parametrize("output_stride,high_size,rates", [(16, 4, (6, 12, 18)), (8, 8, (12, 24, 36))])
def test_deeplab_output_stride_sets_high_size_and_aspp_rates(output_stride, high_size, rates):
  config = _config("deeplabv3plus", output_stride=output_stride, backbone="resnet50")
  model = nnx.eval_shape(lambda: build_model(config, NUM_CLASSES, nnx.Rngs(0)))
  assert model.rates == rates
  low, high = nnx.eval_shape(lambda m, x: m.encode(x, train=False), model,
                             jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert low.shape[1:3] == (16, 16) and high.shape[1:3] == (high_size, high_size)
  assert high.shape[3] == model.backbone.channels["stride32"]
  y = nnx.eval_shape(lambda m, x: m(x, train=False), model, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert y.shape == (1, 64, 64, NUM_CLASSES)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  config = _config("deeplabv3plus", backbone="resnet50")
  config.dtype = "bfloat16"
  model = nnx.eval_shape(lambda: build_model(config, NUM_CLASSES, nnx.Rngs(0)))
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
  fused = nnx.eval_shape(lambda m, x: m.decode(*m.encode(x, train=False), train=False), model,
                         jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert fused.dtype == jnp.bfloat16
  y = nnx.eval_shape(lambda m, x: m(x, train=False), model, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert y.dtype == jnp.float32


# U-Net -------------------------------------------------------------------------------------------------------------

def test_unet_replace_head_keeps_everything_but_the_head(models):
  model = nnx.clone(models["unet"])
  old_state = _snapshot(nnx.state(model, (nnx.Param, nnx.BatchStat)))
  width = model.head.in_features
  replace_head(model, 3, nnx.Rngs(1))
  assert model.head.kernel.shape == (1, 1, width, 3) and model.out_channels == 3
  new_state = _snapshot(nnx.state(model, (nnx.Param, nnx.BatchStat)))
  assert _equal_trees(old_state["backbone"], new_state["backbone"])
  for key in old_state:
    if key != "head":
      assert _equal_trees(old_state[key], new_state[key]), key
  y = model(_images(48, 64, seed=6), train=False)
  assert y.shape == (2, 48, 64, 3)


def test_unet_encoder_is_resnet34_unless_resnet18():
  for backbone, layers in [("resnet50", (3, 4, 6, 3)), ("resnet18", (2, 2, 2, 2))]:
    model = nnx.eval_shape(lambda: build_model(_config("unet", backbone=backbone), 3, nnx.Rngs(0)))
    stages = (model.backbone.layer1, model.backbone.layer2, model.backbone.layer3, model.backbone.layer4)
    assert tuple(len(s) for s in stages) == layers
    assert model.backbone.output_stride == 32


# Registry ----------------------------------------------------------------------------------------------------------

def test_registry_names():
  assert {"deeplabv3plus", "unet", "fcn"} <= set(MODELS)


def test_unknown_model_name_is_a_config_error():
  with pytest.raises(ConfigError, match="segformer") as info:
    build_model(_config("segformer"), NUM_CLASSES, nnx.Rngs(0))
  assert "deeplabv3plus" in str(info.value) and "unet" in str(info.value)


def test_unknown_backbone_is_a_config_error():
  with pytest.raises(ConfigError, match="resnet152"):
    build_model(_config("deeplabv3plus", backbone="resnet152"), NUM_CLASSES, nnx.Rngs(0))
