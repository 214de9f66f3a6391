"""L-MAE model: shapes per variant, the encoder's visible-only cost, and what the model can and cannot see."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.lmae import model as lmae
from maskseg_jax.methods.lmae import patch_masks as P

N, S, PS = 5, 32, 8  # classes, image size, patch size -> 16 patches
L = (S // PS) ** 2


def _model(**kw):
  args = dict(num_classes=N, image_size=S, patch_size=PS, **lmae.LMAE_SIZES["tiny"])
  args.update(kw)
  return lmae.LMAE(**args, rngs=nnx.Rngs(params=0, dropout=1))


def _inputs(ratio=0.5, b=2, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  image = jax.random.normal(k1, (b, S, S, 3))
  label = jax.random.randint(k2, (b, S, S), 0, N).at[:, :3, :3].set(255)
  bprop = P.background_proportion(label, PS, [0])
  keep, masked, mask = P.mask_from_scores(P.mixed_strategy_scores(k3, bprop), P.num_visible(L, ratio))
  return image, label, keep, masked, mask


def _pixel_mask(patch_mask):
  """bool[B,L] -> bool[B,H,W]."""
  pix = jnp.broadcast_to(patch_mask[..., None], patch_mask.shape + (PS * PS,)).astype(jnp.float32)
  return P.unpatchify(pix, PS, S, S)[..., 0] > 0


@pytest.mark.parametrize("fuse,ips", [("layer", True), ("layer", False), ("insert", True), ("direct", False)])
def test_output_shape_per_variant(fuse, ips):
  model = _model(fuse=fuse, ips=ips)
  image, label, keep, masked, _ = _inputs()
  out = model(image, label, keep, masked, train=False)
  assert out.shape == (2, S, S, N) and bool(jnp.all(jnp.isfinite(out)))
  fused = model.fuse_map(image, label)
  assert fused.shape[-1] == lmae.fuse_channels(fuse, N)


def test_fuse_map_void_encoding():
  image = jnp.zeros((1, 2, 2, 3))
  label = jnp.array([[[0, 2], [255, 4]]])
  layer = lmae.fuse_map(image, label, num_classes=N, fuse="layer")
  np.testing.assert_array_equal(layer[0, 1, 0, :N], 0)  # void: all-zero one-hot
  assert layer[0, 0, 1, 2] == 1
  direct = lmae.fuse_map(image, label, num_classes=N, fuse="direct")[..., 3]
  np.testing.assert_allclose(direct[0], [[0.0, 2 / N], [lmae.VOID_VALUE, 4 / N]])
  insert = lmae.fuse_map(image, label, num_classes=N, fuse="insert")
  np.testing.assert_array_equal(insert[..., 1], insert[..., 3])


def test_masked_labels_are_invisible_visible_labels_matter():
  for fuse in lmae.FUSE:
    model = _model(fuse=fuse)
    image, label, keep, masked, mask = _inputs()
    pix = _pixel_mask(mask)
    base = model(image, label, keep, masked, train=False)
    other = (label + 1) % N
    hidden = model(image, jnp.where(pix, other, label), keep, masked, train=False)
    np.testing.assert_array_equal(hidden, base)
    shown = model(image, jnp.where(pix, label, other), keep, masked, train=False)
    assert float(jnp.abs(shown - base).max()) > 1e-4


def test_ips_uses_the_masked_image_and_mask_token_does_not():
  image, label, keep, masked, mask = _inputs()
  noisy = jnp.where(_pixel_mask(mask)[..., None], image + 1.0, image)
  ips = _model(ips=True)
  assert float(jnp.abs(ips(noisy, label, keep, masked, train=False)
                       - ips(image, label, keep, masked, train=False)).max()) > 1e-4
  token = _model(ips=False)
  np.testing.assert_array_equal(token(noisy, label, keep, masked, train=False),
                                token(image, label, keep, masked, train=False))


def test_encoder_runs_on_visible_tokens_only(monkeypatch):
  seen = []
  original = lmae.Encoder.__call__

  def probe(self, patches_, ids_keep, *, train):
    seen.append(patches_.shape[1])
    return original(self, patches_, ids_keep, train=train)

  monkeypatch.setattr(lmae.Encoder, "__call__", probe)
  model = _model()
  graphdef, state = nnx.split(model)

  def flops(ratio):
    image, label, keep, masked, _ = _inputs(ratio)
    fn = jax.jit(lambda st, *a: nnx.merge(graphdef, st)(*a, train=False))
    return fn.lower(state, image, label, keep, masked).cost_analysis()["flops"]

  full, quarter = flops(0.0), flops(0.75)
  assert seen == [L, L // 4]
  assert quarter < 0.6 * full, (quarter, full)


def test_drop_path_reseed_is_reproducible():
  model = _model(drop_path=0.5)
  image, label, keep, masked, _ = _inputs()
  nnx.reseed(model, dropout=jax.random.key(3))
  a = model(image, label, keep, masked, train=True)
  nnx.reseed(model, dropout=jax.random.key(3))
  b = model(image, label, keep, masked, train=True)
  c = model(image, label, keep, masked, train=False)
  np.testing.assert_array_equal(a, b)
  assert float(jnp.abs(a - c).max()) > 1e-4
  np.testing.assert_array_equal(c, model(image, label, keep, masked, train=False))


def test_paper_size_parameter_count():
  """Table IV lists 250M at EB8/DB6/ED1440/DD720 (224 input, p=16, VOC's 21 classes)."""
  model = nnx.eval_shape(lambda: lmae.LMAE(num_classes=21, image_size=224, patch_size=16,
                                           **lmae.LMAE_SIZES["paper"], rngs=nnx.Rngs(0)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert 245e6 < count < 256e6, count


def test_build_lmae_reads_config():
  cfg = ml_collections.ConfigDict(dict(size="tiny", patch_size=PS, image_size=(S, S), fuse="insert", ips=False,
                                       activation="gelu", drop_path=0.1, enc_depth=1, dec_dim=0))
  model = lmae.build_lmae(cfg, N, nnx.Rngs(0))
  assert len(model.backbone.blocks) == 1 and model.dec_dim == 64 and model.fuse == "insert"
  assert not hasattr(model, "ips_embed")
  cfg.size = "huge"
  with pytest.raises(ConfigError, match="huge"):
    lmae.build_lmae(cfg, N, nnx.Rngs(0))
