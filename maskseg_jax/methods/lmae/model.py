"""L-MAE: an asymmetric ViT autoencoder that completes a label from its visible patches and the image.

The encoder runs on the `K` visible patches of the Stack-Fuse map only (its cost falls with the mask
ratio); the decoder sees every position, filled by Image Patch Supplement (IPS) where the label was masked.
See `../shared/specs/lmae.md`, section "Model".

`build_lmae(model_config, num_classes, rngs)` reads these `model.*` fields:
  size          key of `LMAE_SIZES` ("paper", "table4_large", "table4_small", "tiny")
  patch_size    int p; the image size must be divisible by it
  image_size    int or (h, w): the fixed model input size (sets the position-embedding grid)
  fuse          key of `FUSE` ("layer", "insert", "direct")
  ips           bool; False = learned mask token (the MAE ablation)
  activation    key of `ACTIVATIONS` ("relu", "gelu")
  drop_path     float; stochastic-depth rate of the last encoder block (linear from 0 over the blocks)
  optional overrides, used when present and > 0 (otherwise taken from `size`):
  enc_depth, dec_depth, enc_dim, dec_dim, enc_heads, dec_heads, mlp_ratio
  this project's extensions (off when absent; `methods/lmae/extensions.py`):
  prior         "none" | "nearest" | "geodesic": visible-label prior fed to IPS and the refinement head
  refine_width  int; > 0 adds a pixel-level conv refinement head of that width
  prior_skip    bool; learned logits at the prior's class by distance to its seed (needs a prior)

Encoder parameters live under `model.backbone` (the project convention); L-MAE trains everything with one
learning rate, so its configs should set `optim.head_lr_mult = 1.0`.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.lmae import extensions as ext
from maskseg_jax.methods.lmae.patch_masks import gather_tokens, masked_pixels, patchify, unpatchify

# --- Stack Fuse ------------------------------------------------------------------------------------------
# Label pixels outside [0, N) (void 255, or an "unknown" marker) carry no class. In `layer` they get an
# all-zero one-hot (spec). In `insert`/`direct` class c becomes c / N in [0, 1) and such pixels become
# VOID_VALUE = -1, outside that range, so void stays distinguishable from class 0.
VOID_VALUE = -1.0


def _scaled_label(label: jax.Array, num_classes: int) -> jax.Array:
  valid = (label >= 0) & (label < num_classes)
  return jnp.where(valid, label.astype(jnp.float32) / num_classes, VOID_VALUE)[..., None]


def _fuse_layer(image: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
  """concat(one-hot N, RGB): N + 3 channels; `jax.nn.one_hot` is all-zero for ids outside [0, N)."""
  onehot = jax.nn.one_hot(label, num_classes, dtype=image.dtype)
  return jnp.concatenate([onehot, image], axis=-1)


def _fuse_insert(image: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
  """R, y, G, y, B, y (paper's Insert Concat): 6 channels."""
  y = _scaled_label(label, num_classes).astype(image.dtype)
  r, g, b = image[..., 0:1], image[..., 1:2], image[..., 2:3]
  return jnp.concatenate([r, y, g, y, b, y], axis=-1)


def _fuse_direct(image: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
  """RGB + y / N (paper's Directly Concat): 4 channels."""
  y = _scaled_label(label, num_classes).astype(image.dtype)
  return jnp.concatenate([image, y], axis=-1)


FUSE: dict[str, Callable[[jax.Array, jax.Array, int], jax.Array]] = {
    "layer": _fuse_layer,
    "insert": _fuse_insert,
    "direct": _fuse_direct,
}


def fuse_channels(fuse: str, num_classes: int) -> int:
  """Channel count of a fuse map, needed before any data is seen (patch-embedding width)."""
  return {"layer": num_classes + 3, "insert": 6, "direct": 4}[fuse]


def fuse_map(image: jax.Array, label: jax.Array, *, num_classes: int, fuse: str = "layer") -> jax.Array:
  """[B,H,W,3] normalized image + int[B,H,W] label -> [B,H,W,C] Stack-Fuse map."""
  if fuse not in FUSE:
    raise ConfigError(f"model.fuse={fuse!r} is unknown; expected one of {sorted(FUSE)}")
  return FUSE[fuse](image, label, num_classes)


# --- Position embeddings ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  """Fixed 2D sin-cos embeddings float32[gh*gw, dim] (MAE): half the channels encode the row, half the column.

  A cached numpy constant, not a parameter: it never trains and never lands in checkpoints.
  """
  if dim % 4:
    raise ConfigError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

  def one_axis(pos):
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64),
                           indexing="ij")
  return np.concatenate([one_axis(rows), one_axis(cols)], axis=1).astype(np.float32)


# --- Transformer blocks ----------------------------------------------------------------------------------
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,  # the paper's FFN
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}

_xavier = nnx.initializers.xavier_uniform()


def _linear(din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, kernel_init=_xavier, rngs=rngs)


def drop_path(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
  """Stochastic depth: drops a sample's whole residual branch (one draw per sample over [B,T,D])."""
  return nnx.Dropout(rate, broadcast_dims=(1, 2), rng_collection="dropout", rngs=rngs)


class Block(nnx.Module):
  """Pre-LN transformer block: x + DropPath(MHA(LN x)), then x + DropPath(FFN(LN x))."""

  def __init__(self, dim: int, heads: int, mlp_ratio: float, activation: str, drop_rate: float,
               *, rngs: nnx.Rngs, drop_rngs: nnx.Rngs):
    if dim % heads:
      raise ConfigError(f"width {dim} is not divisible by {heads} heads")
    self.activation = activation
    self.norm1 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, dim, kernel_init=_xavier, decode=False, deterministic=True,
                                       keep_rngs=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    hidden = int(dim * mlp_ratio)
    self.fc1 = _linear(dim, hidden, rngs)
    self.fc2 = _linear(hidden, dim, rngs)
    self.drop = drop_path(drop_rate, drop_rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = x + self.drop(self.attn(self.norm1(x)), deterministic=not train)
    h = self.fc2(ACTIVATIONS[self.activation](self.fc1(self.norm2(x))))
    return x + self.drop(h, deterministic=not train)


class Encoder(nnx.Module):
  """Patch embedding + fixed pos-embedding + EB blocks + LN, applied to the visible patches only."""

  def __init__(self, in_dim: int, grid: tuple[int, int], dim: int, depth: int, heads: int, mlp_ratio: float,
               activation: str, drop_path_rate: float, *, rngs: nnx.Rngs, drop_rngs: nnx.Rngs):
    self.grid = grid
    self.dim = dim
    sincos_2d(dim, *grid)  # validate the width now, not at the first call
    self.patch_embed = _linear(in_dim, dim, rngs)
    rates = np.linspace(0.0, drop_path_rate, depth) if depth else []
    self.blocks = nnx.List([Block(dim, heads, mlp_ratio, activation, float(r), rngs=rngs, drop_rngs=drop_rngs)
                              for r in rates])
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)

  def __call__(self, visible_patches: jax.Array, ids_keep: jax.Array, *, train: bool) -> jax.Array:
    """[B,K,p*p*C] fuse-map patches at positions ids_keep int[B,K] -> [B,K,ED] tokens."""
    pos = jnp.asarray(sincos_2d(self.dim, *self.grid))[ids_keep]  # [B,K,ED]
    x = self.patch_embed(visible_patches) + pos
    for block in self.blocks:
      x = block(x, train=train)
    return self.norm(x)


class LMAE(nnx.Module):
  """Label masked autoencoder: (image, label, mask ids) -> logits [B,H,W,N] over the whole image."""

  def __init__(self, *, num_classes: int, image_size: int | tuple[int, int], patch_size: int,
               enc_depth: int, dec_depth: int, enc_dim: int, dec_dim: int, enc_heads: int, dec_heads: int,
               mlp_ratio: float = 4, fuse: str = "layer", ips: bool = True, activation: str = "relu",
               drop_path: float = 0.0, prior: str = "none", refine_width: int = 0, prior_skip: bool = False,
               rngs: nnx.Rngs):
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    p = patch_size
    if h % p or w % p:
      raise ConfigError(f"model.image_size={(h, w)} is not divisible by model.patch_size={p}")
    if fuse not in FUSE:
      raise ConfigError(f"model.fuse={fuse!r} is unknown; expected one of {sorted(FUSE)}")
    if activation not in ACTIVATIONS:
      raise ConfigError(f"model.activation={activation!r} is unknown; expected one of {sorted(ACTIVATIONS)}")
    self.num_classes = num_classes
    self.image_size = (h, w)
    self.patch_size = p
    self.grid = (h // p, w // p)
    self.fuse = fuse
    self.ips = ips
    ext.check_prior(prior)
    if prior != "none" and not ips:
      raise ConfigError("model.prior needs model.ips=True (the prior joins the image patch of masked tokens)")
    self.prior = prior
    if prior_skip and prior == "none":
      raise ConfigError("model.prior_skip needs a model.prior (it adds logits at the prior's class)")
    self.prior_skip = ext.PriorSkip(num_classes) if prior_skip else None
    self.dec_dim = dec_dim
    sincos_2d(dec_dim, *self.grid)  # validate the decoder width early
    # A dedicated "dropout" stream, so `nnx.reseed(model, dropout=key)` works even when built from nnx.Rngs(seed).
    drop_rngs = nnx.Rngs(dropout=rngs["dropout"]())
    self.backbone = Encoder(p * p * fuse_channels(fuse, num_classes), self.grid, enc_dim, enc_depth, enc_heads,
                            mlp_ratio, activation, drop_path, rngs=rngs, drop_rngs=drop_rngs)
    self.decoder_embed = _linear(enc_dim, dec_dim, rngs)
    if ips:
      prior_channels = num_classes if prior != "none" else 0
      self.ips_embed = _linear((3 + prior_channels) * p * p, dec_dim, rngs)
    else:
      self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, dec_dim)))
    # MAE's decoder has no stochastic depth; rate 0 keeps the block structure shared with the encoder.
    self.decoder_blocks = nnx.List([Block(dec_dim, dec_heads, mlp_ratio, activation, 0.0,
                                          rngs=rngs, drop_rngs=drop_rngs) for _ in range(dec_depth)])
    self.decoder_norm = nnx.LayerNorm(dec_dim, epsilon=1e-6, rngs=rngs)
    self.head = _linear(dec_dim, p * p * num_classes, rngs)
    # Refinement input: image, decoder logits, prior one-hot and cues, visible one-hot, masked-pixel indicator.
    self.refine = (ext.RefineHead(3 + 3 * num_classes + ext.PRIOR_CUES + 1, refine_width, num_classes, rngs=rngs)
                   if refine_width > 0 else None)

  def fuse_map(self, image: jax.Array, label: jax.Array) -> jax.Array:
    """The Stack-Fuse map this model encodes (for pictures and debugging)."""
    return fuse_map(image, label, num_classes=self.num_classes, fuse=self.fuse)

  def __call__(self, image: jax.Array, label: jax.Array, ids_keep: jax.Array, ids_masked: jax.Array, *,
               train: bool, given_px: jax.Array | None = None) -> jax.Array:
    """image float[B,H,W,3] (normalized), label int[B,H,W] (255 void), ids from `mask_from_scores`.

    Labels at masked patches never reach the computation: only the visible fuse-map patches are gathered.
    `given_px` bool[B,H,W] (completion only, `lmae.pixel_context`): pixels whose label is a genuinely given one;
    those inside masked patches also seed the prior (the encoder still sees whole visible patches only).
    """
    b, h, w, _ = image.shape
    if (h, w) != self.image_size:
      raise ValueError(f"LMAE was built for {self.image_size} inputs, got {(h, w)}")
    p = self.patch_size
    fused = patchify(self.fuse_map(image, label), p)  # [B,L,p*p*C]
    latent = self.backbone(gather_tokens(fused, ids_keep), ids_keep, train=train)  # [B,K,ED]

    visible = self.decoder_embed(latent)  # [B,K,DD]
    n_masked = ids_masked.shape[1]
    masked_px = masked_pixels(ids_masked, p, h, w)
    prior = cues = None
    if self.prior != "none" or self.refine is not None:  # both built from visible labels only
      seeds = ~masked_px if given_px is None else ~masked_px | given_px
      prior, cues = ext.prior_features(image, label, seeds, self.num_classes, self.prior)
    if self.ips:  # image (and the visible-label prior): the masked label must stay hidden
      supplement = image if self.prior == "none" else jnp.concatenate([image, prior], -1)
      masked = self.ips_embed(gather_tokens(patchify(supplement, p), ids_masked))
    else:
      masked = jnp.broadcast_to(self.mask_token[...], (b, n_masked, self.dec_dim)).astype(visible.dtype)
    # Put every token back at its patch position.
    ids_all = jnp.concatenate([ids_keep, ids_masked], axis=1)
    restore = jnp.argsort(ids_all, axis=1)
    x = gather_tokens(jnp.concatenate([visible, masked], axis=1), restore)
    x = x + jnp.asarray(sincos_2d(self.dec_dim, *self.grid))

    for block in self.decoder_blocks:
      x = block(x, train=train)
    logits = unpatchify(self.head(self.decoder_norm(x)), p, h, w)  # [B,H,W,N]
    if self.refine is not None:
      visible_onehot = jax.nn.one_hot(jnp.where(masked_px, -1, label), self.num_classes, dtype=image.dtype)
      features = jnp.concatenate([image, logits, prior, cues, visible_onehot,
                                  masked_px[..., None].astype(image.dtype)], -1)
      logits = logits + self.refine(features)
    if self.prior_skip is not None:
      logits = logits + self.prior_skip(prior, cues)
    return logits


# --- Sizes and builder -----------------------------------------------------------------------------------
# Widths of "table4_small" (the paper lists 6/4 with both 1024/512 and 1440/720): our choice 1024/512, the
# cheaper row (98M parameters in Table IV). Heads are our choice (spec: 12/12 for the paper size); 1024 and
# 512 are not divisible by 12, so those rows use 16 heads (head dims 64 and 32).
LMAE_SIZES: dict[str, dict[str, int]] = {
    "paper": dict(enc_depth=8, dec_depth=6, enc_dim=1440, dec_dim=720, enc_heads=12, dec_heads=12),
    "table4_large": dict(enc_depth=12, dec_depth=8, enc_dim=1024, dec_dim=512, enc_heads=16, dec_heads=16),
    "table4_small": dict(enc_depth=6, dec_depth=4, enc_dim=1024, dec_dim=512, enc_heads=16, dec_heads=16),
    "tiny": dict(enc_depth=2, dec_depth=1, enc_dim=128, dec_dim=64, enc_heads=4, dec_heads=4),
}
_OVERRIDES = ("enc_depth", "dec_depth", "enc_dim", "dec_dim", "enc_heads", "dec_heads", "mlp_ratio")
_REQUIRED = ("size", "patch_size", "image_size", "fuse", "ips", "activation", "drop_path")


def build_lmae(model_config, num_classes: int, rngs: nnx.Rngs) -> LMAE:
  """Builds an LMAE from the `model.*` fields listed in the module docstring."""
  missing = [k for k in _REQUIRED if k not in model_config]
  if missing:
    raise ConfigError(f"model config lacks {missing} needed by L-MAE (see maskseg_jax/methods/lmae/model.py)")
  if model_config.size not in LMAE_SIZES:
    raise ConfigError(f"model.size={model_config.size!r} is unknown; expected one of {sorted(LMAE_SIZES)}")
  dims = dict(LMAE_SIZES[model_config.size], mlp_ratio=4)
  for k in _OVERRIDES:
    v = model_config.get(k, 0)
    if v and v > 0:
      dims[k] = v
  image_size = model_config.image_size
  image_size = image_size if isinstance(image_size, int) else tuple(int(s) for s in image_size)
  return LMAE(num_classes=num_classes, image_size=image_size, patch_size=int(model_config.patch_size),
              fuse=model_config.fuse, ips=bool(model_config.ips), activation=model_config.activation,
              drop_path=float(model_config.drop_path), prior=str(model_config.get("prior", "none")),
              refine_width=int(model_config.get("refine_width", 0)),
              prior_skip=bool(model_config.get("prior_skip", False)), rngs=rngs, **dims)
