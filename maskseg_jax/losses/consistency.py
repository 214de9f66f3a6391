"""Weak-to-strong consistency terms (UniMatch / FixMatch, S4MIM, MaskMatch) as pure array functions.

Losses return `(sum, count)` so the train step divides once over the global batch. Pseudo-labels are
computed under stop-gradient: the weak view is a teacher, never trained through its own targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from maskseg_jax.losses.segmentation import cross_entropy


def pseudo_labels_from_probs(probs):
  """float[..., C] class probabilities -> (yhat int32[...], conf float32[...]), gradient stopped."""
  probs = jax.lax.stop_gradient(probs.astype(jnp.float32))
  return jnp.argmax(probs, axis=-1).astype(jnp.int32), jnp.max(probs, axis=-1)


def pseudo_labels(logits_w):
  """Weak-view logits [..., C] -> (argmax class, max softmax probability), gradient stopped."""
  return pseudo_labels_from_probs(jax.nn.softmax(jax.lax.stop_gradient(logits_w).astype(jnp.float32), axis=-1))


def roll_partner(batch: int, shift: int = 1):
  """Partner index of every sample: the next one in the batch, so no image is pasted into itself."""
  return (jnp.arange(batch) + shift) % batch


def _explicit(x) -> bool:
  """Whether x is typed with an Explicit-sharding mesh (the default of `jax.make_mesh`)."""
  mesh = jax.typeof(x).sharding.mesh
  return any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def _take_batch(x, index):
  """x[index] along the batch axis; under an Explicit mesh the output keeps x's sharding (jax asks for it)."""
  if _explicit(x):
    return x.at[index].get(out_sharding=jax.typeof(x).sharding)
  return x[index]


def cutmix_mix(images, box, partner_index, source=None):
  """Pastes `source[partner_index]` (default `images[...]`) inside `box` (bool[B,H,W]); [B,H,W] or [B,H,W,C]."""
  images, box = jnp.asarray(images), jnp.asarray(box).astype(bool)
  source = images if source is None else jnp.asarray(source)
  if images.ndim == box.ndim + 1:
    box = box[..., None]
  return jnp.where(box, _take_batch(source, partner_index), images)


def cutmix_targets(yhat, conf, ignore, box, partner_index, source=None):
  """Pseudo-label, confidence and ignore mask of a CutMix-ed view: the partner's inside the box, taken from
  `source` = (yhat, conf, ignore) of another labelling of the same images when given (UniMatch's eval pass)."""
  src = (None, None, None) if source is None else source
  return tuple(cutmix_mix(a, box, partner_index, s) for a, s in zip((yhat, conf, ignore), src))


def confident_ce(logits, yhat, conf, ignore, tau: float):
  """CE against `yhat` counted where conf >= tau and not ignored.

  UniMatch convention: the count is the number of NOT-ignored pixels (not of confident ones), so an
  uncertain batch contributes a small loss rather than a loud one averaged over few pixels.
  """
  keep = (conf >= tau) & ~ignore
  total, _ = cross_entropy(logits, yhat, weights=keep.astype(jnp.float32))
  return total, jnp.sum(~ignore).astype(jnp.float32)


def confident_fraction(conf, ignore, tau: float):
  """(confident not-ignored pixels, not-ignored pixels): the share of pixels the threshold lets through."""
  valid = ~ignore
  return jnp.sum((conf >= tau) & valid).astype(jnp.float32), jnp.sum(valid).astype(jnp.float32)


def ohem_ce(logits, labels, thresh: float = 0.7, min_kept: int = 200000, ignore_label: int = 255):
  """Online hard example mining CE: keeps pixels whose true-class prob < thresh, at least `min_kept`.

  If fewer than `min_kept` pixels are below `thresh`, the threshold rises to the min_kept-th smallest
  probability (min_kept capped at the number of valid pixels). Static shapes: one sort of the flat
  probability vector. Returns (sum, number of kept pixels).
  """
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  probs = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
  p = jnp.take_along_axis(probs, safe[..., None], axis=-1)[..., 0]
  p = jnp.where(valid, p, 2.0)  # ignored pixels sort after every real probability
  flat = p.reshape(-1)
  if _explicit(flat):  # a global sort needs the whole vector on every device
    replicated = jax.typeof(flat).sharding.update(spec=jax.sharding.PartitionSpec())
    flat = jax.sharding.reshard(flat, replicated)
  flat = jnp.sort(flat)
  num_valid = jnp.sum(valid)
  k = jnp.clip(jnp.minimum(min_kept, num_valid), 1, flat.shape[0])
  threshold = jnp.maximum(thresh, flat[k - 1])
  kept = valid & (p <= threshold)
  return cross_entropy(logits, jnp.where(kept, labels, ignore_label), ignore_label=ignore_label)


def channel_keep(rng, shape, rate: float):
  """bool[B, 1.., C] channels `channel_dropout` keeps for features of `shape` (NHWC): one draw per sample and
  channel, each kept with probability 1 - rate."""
  return jax.random.bernoulli(rng, 1.0 - rate, (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],))


def channel_dropout(x, rng, rate: float = 0.5):
  """Dropout2d on NHWC features: zeroes whole channels per sample, scales the rest by 1 / (1 - rate)."""
  if rate <= 0.0:
    return x
  keep = channel_keep(rng, x.shape, rate)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


def masked_mse(rec, target, pixel_mask):
  """Squared error over masked pixels (bool[B,H,W]) and all channels: (sum, masked pixels x channels)."""
  m = pixel_mask.astype(jnp.float32)[..., None]
  err = jnp.square(rec.astype(jnp.float32) - target.astype(jnp.float32))
  return jnp.sum(err * m), jnp.sum(m) * rec.shape[-1]
