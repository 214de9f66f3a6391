"""Semi-supervised segmentation: UniMatch weak-to-strong consistency with optional S4MIM and MaskMatch terms.

One pure train step whose loss terms are switched by `config.semi` weights (see `config.py`):

  L = scale * (w_x L_x + w_s1 L_s1 + w_s2 L_s2 + w_fp L_fp) + l_rec L_rec + l_agg L_agg + l_sem L_sem
      + l_mask L_mask

Forward passes (train-mode BN), one per kind of input so BN statistics are not mixed with masked images:
(1) labeled + weak views through the encoder, the decoder run on clean and channel-dropped (low, high) features,
of the labeled and weak rows (`fp_labeled`, UniMatch's code: the dropped labeled rows reach no loss, only the
decoder's batch statistics) or of the weak rows only; (2) both CutMix-ed strong views; (3) the masked weak
views (S4MIM and MaskMatch, when on), whose BN running-statistics update is discarded, so eval-mode statistics
describe unmasked images only.
Pseudo-labels come from the weak branch of (1) under stop-gradient, or, when `ensemble_scales` or `ema_decay` is
set, from separate teacher passes of the student's (or the EMA teacher's) weights, averaged over scales
(MaskMatch); those labels then drive every unsupervised term. BN in teacher passes: each pass's batch
statistics with the update discarded (`teacher_batch_stats`, the default: what the weak branch does), or eval
mode on running statistics. Inside a CutMix box the partner's pseudo-label is its weak-branch one
(`mix_teacher="weak"`, no extra pass), or, as UniMatch's code labels its second unlabeled batch, that of a
no-gradient eval-mode pass over the partners before the step (`"eval"`). Prototypes (S4MIM) and the EMA
teacher live in `state["extra"]`, are updated outside the gradient and are checkpointed with the state.

This project's extensions (off by default, see `config.py`): `warmup_steps` / `rampup_steps` start the
unlabeled terms after a labeled-only warm-up (`unlabeled_weight`); `ensemble_guard` combines the teacher's
scales by a collapse guard instead of the plain mean (`ENSEMBLE_GUARDS`); `threshold="flexmatch"` replaces
the one `tau` by class-wise thresholds from an EMA of each class's confident share (`THRESHOLDS`, state
`extra["class_conf"]`). `diagnostics` (on by default where the unlabeled images have labels) adds
pseudo-label accuracy against the unlabeled truth (`u_truth`, read by `diagnostics.py` only) to the step
metrics and a `SemiDiagnostics` evaluator to every eval. experiments/parity_unimatch.py compares this step with
UniMatch's PyTorch code on identical weights, batch, CutMix boxes and channel masks (`step_keys`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from maskseg_jax.errors import ConfigError
from maskseg_jax.losses import consistency as cons
from maskseg_jax.losses import feature as feat
from maskseg_jax.losses import segmentation as seg_losses
from maskseg_jax.methods import base
from maskseg_jax.methods.semi_supervised import diagnostics as diag
from maskseg_jax.methods.semi_supervised import ensemble
from maskseg_jax.methods.semi_supervised import streams as semi_streams
from maskseg_jax.methods.semi_supervised.mim_heads import norm_pix_target
from maskseg_jax.methods.semi_supervised.model import FEATURE_STRIDE, SemiModel
from maskseg_jax.methods.semi_supervised.random_patches import apply_pixel_mask, random_patch_mask
from maskseg_jax.methods.semi_supervised.terms import ENSEMBLE_GUARDS, Terms, class_thresholds, pixel_threshold
from maskseg_jax.models.resnet import logits_at


U = semi_streams.UNLABELED_PREFIX


def _mean(pair):
  total, count = pair
  return total / jnp.maximum(count, 1.0)


def _join(arrays):
  """Equal-size batches -> one batch, interleaved (a0, b0, a1, b1, ...) rather than concatenated.

  Batch statistics do not depend on the order, and interleaving keeps every device's rows on that device
  under batch sharding (stack on a new axis 1, merge it into the batch axis), where a concatenation followed
  by slicing would move rows between devices in every pass forward and backward.
  """
  if len(arrays) == 1:
    return arrays[0]
  x = jnp.stack(arrays, axis=1)
  return x.reshape((-1,) + x.shape[2:])


def _unjoin(x, n: int):
  """Inverse of `_join` for `n` batches."""
  if n == 1:
    return [x]
  x = x.reshape((-1, n) + x.shape[1:])
  return [x[:, i] for i in range(n)]


def _fp_keys(keys: dict, n: int) -> list:
  """One channel-dropout key per encoder map; the first two are DeepLabV3+'s (low, high) streams as before."""
  return [keys["fp_low"], keys["fp_high"], *(jax.random.fold_in(keys["fp_high"], i) for i in range(2, n))][:n]


def _with_dropped_copy(feature, key, rate: float, labeled: bool):
  """(labeled, weak) joined map -> (labeled, weak, [labeled dropped,] weak dropped): UniMatch's FP branch.

  With `labeled` (UniMatch's code) the whole joined map gets a channel-dropped copy: the dropped labeled rows
  reach no loss but share the decoder's batch statistics, as in the reference; without, only the weak rows do
  (a quarter less decoder work, other BN statistics). Masks are `cons.channel_keep(key, rows.shape, rate)` of
  the rows dropped, joined order (x0, u0, x1, u1, ...) when `labeled`.
  """
  f_x, f_u = _unjoin(feature, 2)
  if labeled:
    d_x, d_u = _unjoin(cons.channel_dropout(feature, key, rate), 2)
    return _join([f_x, f_u, d_x, d_u])
  return _join([f_x, f_u, cons.channel_dropout(f_u, key, rate)])


def _logits(seg, fused, hw):
  """Classifier logits upsampled to the crop on the segmenter's own grid (`align_corners`, DeepLabV3+)."""
  return logits_at(seg.classify(fused), hw, align_corners=getattr(seg, "align_corners", False))


def _eval_probs(mdef: base.ModelDef, state: dict, images):
  """Softmax of an eval-mode (running statistics) pass, gradient stopped: UniMatch's CutMix-partner labels."""
  model = mdef.merge(state["params"], state["batch_stats"])
  return jax.lax.stop_gradient(jax.nn.softmax(model(images, train=False).astype(jnp.float32), axis=-1))


def _teacher_probs(mdef: base.ModelDef, state: dict, images, key, terms: Terms, ignore=None):
  """Teacher softmax combined over `ensemble_scales` (just 1.0 for a plain EMA teacher) by
  `ENSEMBLE_GUARDS[ensemble_guard]`, gradient stopped; `ignore` marks padding (the prior guard's marginal).

  With `teacher_batch_stats` the teacher normalizes with each pass's own batch statistics, as the weak branch
  of the training forward does (FixMatch style), and its statistics update is discarded; otherwise it runs in
  eval mode on the running statistics, which are far off during the first steps of a from-scratch model.
  """
  src = state["extra"]["teacher"] if terms.ema_decay > 0 else state
  teacher = mdef.merge(src["params"], src["batch_stats"])
  if terms.teacher_batch_stats:
    base.reseed_dropout(teacher, key)
  train = terms.teacher_batch_stats
  per_scale = ensemble.scale_probs(lambda im: teacher(im, train=train), images, terms.ensemble_scales or (1.0,))
  valid = jnp.ones(images.shape[:3], bool) if ignore is None else ~ignore
  thr = pixel_threshold(terms, class_thresholds(terms, state["extra"]))
  probs = ENSEMBLE_GUARDS[terms.ensemble_guard](per_scale, thr, state["extra"].get("class_prior"), valid)
  return jax.lax.stop_gradient(probs)


def pseudo_labels_for(mdef: base.ModelDef, state: dict, images, ignore, key, terms: Terms):
  """(yhat, conf, per-pixel threshold) of `images` alone, as the step's unsupervised terms would see them
  (the teacher pass when there is one, else the student in train mode as the weak branch): the diagnostics
  evaluator measures the step's own pseudo-labelling with this."""
  if terms.teacher_pass:
    yhat, conf = cons.pseudo_labels_from_probs(_teacher_probs(mdef, state, images, key, terms, ignore))
  else:
    model = mdef.merge(state["params"], state["batch_stats"])
    base.reseed_dropout(model, key)
    yhat, conf = cons.pseudo_labels(model(images, train=True))
  return yhat, conf, pixel_threshold(terms, class_thresholds(terms, state["extra"]))(yhat)


def _class_counts(labels, mask, num_classes: int):
  """float[C] number of `mask` pixels labeled each class."""
  return jnp.sum(jax.nn.one_hot(labels, num_classes) * mask[..., None].astype(jnp.float32), axis=(0, 1, 2))


def _class_shares(labels, valid, num_classes: int):
  """float[C] share of `valid` pixels labeled each class (zeros when none is valid)."""
  return _class_counts(labels, valid, num_classes) / jnp.maximum(jnp.sum(valid), 1.0)


def _ema(old, new, decay: float):
  return jax.tree.map(lambda o, n: (decay * o + (1.0 - decay) * n).astype(o.dtype), old, new)


def _labeled_loss(logits, labels, terms: Terms):
  if terms.ohem:
    return _mean(cons.ohem_ce(logits, labels, terms.ohem_thresh, terms.ohem_min_kept, terms.ignore_label))
  return _mean(seg_losses.cross_entropy(logits, labels, ignore_label=terms.ignore_label))


def _s4mim_losses(model: SemiModel, fea, u_w, pixel_mask, yhat, conf, ignore, memory, terms: Terms, out: dict,
                  thr: Callable | None = None):
  """Reconstruction, aggregation and prototype update from the masked view's fused features `fea`."""
  hw = u_w.shape[1:3]
  fhw = fea.shape[1:3]
  if fhw[0] * FEATURE_STRIDE < hw[0] or fhw[1] * FEATURE_STRIDE < hw[1]:
    raise ConfigError(f"the decoder's fused map {fhw} is not at stride {FEATURE_STRIDE} of the crop {hw}; S4MIM "
                      "needs a DeepLabV3+-style stride-4 decoder")
  y_s, c_s, ig_s, m_s = (feat.resize_nearest(a, fhw) for a in (yhat, conf, ignore, pixel_mask))
  new_memory = None
  tau = terms.tau if thr is None else thr(y_s)
  if terms.l_rec > 0:
    onehot = jax.nn.one_hot(y_s, terms.num_classes, dtype=fea.dtype)
    rec = model.rec_head(fea, onehot)[:, :hw[0], :hw[1]]
    target = norm_pix_target(u_w, terms.mim_patch)
    out["loss_rec"] = _mean(cons.masked_mse(rec, target, pixel_mask & ~ignore))
  if terms.l_agg > 0:
    proto_sum, weight_sum = feat.class_prototypes(fea, y_s, c_s, ~m_s & ~ig_s, terms.num_classes, tau=tau)
    new_memory = feat.ema_update(memory, proto_sum, weight_sum, terms.proto_momentum)
    out["loss_agg"] = _mean(feat.aggregation_loss(fea, y_s, c_s, m_s & ~ig_s, new_memory, tau=tau))
    out["proto_classes"] = jnp.sum(weight_sum > 0).astype(jnp.float32)
  return new_memory


def _forward(model: SemiModel, state: dict, batch: dict, keys, teacher_probs, terms: Terms, mix_probs=None):
  """-> (total loss, per-term metrics, {extra-state key: new value}). Pure in the model's parameters.

  `mix_probs` (semi.mix_teacher="eval"): the class probabilities whose partner rows label the CutMix boxes,
  instead of the weak branch's own pseudo-labels.

  `batch["u_truth"]` (with `semi.diagnostics`, when the stream has it) is read by `diag.step_metrics` only,
  never by a loss.
  """
  seg = model.segmenter
  x, y = batch["image"], batch["label"]
  hw = x.shape[1:3]
  out = {}
  if not terms.unlabeled:
    out["loss_x"] = _labeled_loss(seg(x, train=True), y, terms)
    return terms.scale * terms.w_x * out["loss_x"], out, {}

  u_w, ignore = batch[U + "image"], batch[U + "ignore_mask"]
  bu = u_w.shape[0]
  if x.shape[0] != bu:
    raise ConfigError(f"labeled batch {x.shape[0]} != unlabeled batch {bu}; the streams use the same batch size")
  # (1) labeled + weak, the decoder also run on channel-dropped weak features (UniMatch's FP branch).
  feats = seg.encode(_join([x, u_w]), train=True)  # the encoder's maps (DeepLabV3+: low, high; U-Net: 4 levels)
  fp = terms.w_fp > 0
  if fp:
    feats = tuple(_with_dropped_copy(f, k, terms.fp_dropout, terms.fp_labeled)
                  for f, k in zip(feats, _fp_keys(keys, len(feats))))
  logits = _logits(seg, seg.decode(*feats, train=True), hw)
  logits_x, logits_w, *rest = _unjoin(logits, (4 if terms.fp_labeled else 3) if fp else 2)
  out["loss_x"] = _labeled_loss(logits_x, y, terms)
  if teacher_probs is None:
    yhat, conf = cons.pseudo_labels(logits_w)
  else:
    yhat, conf = cons.pseudo_labels_from_probs(teacher_probs)
  thr = pixel_threshold(terms, class_thresholds(terms, state["extra"]))
  num, den = cons.confident_fraction(conf, ignore, thr(yhat))
  out["conf_frac"] = num / jnp.maximum(den, 1.0)
  updates = {}
  if terms.threshold != "fixed":  # FlexMatch's learning effect: confident (at the fixed tau) share per class
    confident = (conf >= terms.tau) & ~ignore
    share = _class_counts(yhat, confident, terms.num_classes) / jnp.maximum(jnp.sum(~ignore), 1.0)
    updates["class_conf"] = _ema(state["extra"]["class_conf"], share, terms.threshold_momentum)
  if terms.diagnostics and U + "truth" in batch:  # unlabeled sets without labels carry no truth
    out.update(diag.step_metrics(yhat, conf, thr(yhat), ignore, batch[U + "truth"], terms.num_classes))
  if fp:
    out["loss_fp"] = _mean(cons.confident_ce(rest[-1], yhat, conf, ignore, thr(yhat)))

  # (2) strong views, each with the partner's strong view pasted inside its CutMix box.
  partner = cons.roll_partner(bu)
  mix = None if mix_probs is None else (*cons.pseudo_labels_from_probs(mix_probs), ignore)
  views, targets, names = [], [], []
  for i, w in ((1, terms.w_s1), (2, terms.w_s2)):
    if w > 0:
      box = batch[f"{U}cutmix_box{i}"]
      views.append(cons.cutmix_mix(batch[f"{U}image_s{i}"], box, partner))
      targets.append(cons.cutmix_targets(yhat, conf, ignore, box, partner, source=mix))
      names.append(f"loss_s{i}")
  if views:
    logits_s = _unjoin(seg(_join(views), train=True), len(views))  # the segmenter's own grid (align_corners)
    for name, lg, (t_y, t_c, t_ig) in zip(names, logits_s, targets):
      out[name] = _mean(cons.confident_ce(lg, t_y, t_c, t_ig, thr(t_y)))

  # (3) masked weak views: S4MIM (features + semantic CE) and MaskMatch (segmentation of a 70%-masked view).
  masks = []
  if terms.s4mim:
    masks.append(random_patch_mask(keys["mim"], bu, hw[0], hw[1], terms.mim_patch, terms.mim_ratio))
  if terms.l_mask > 0:
    masks.append(random_patch_mask(keys["mask"], bu, hw[0], hw[1], terms.mask_patch, terms.mask_ratio))
  if masks:
    masked = _join([apply_pixel_mask(u_w, m) for m in masks])
    # Normalized with its own batch statistics, but the running statistics (used at eval on clean images)
    # must not absorb those of masked images: a 70%-zero batch drags them far off (eval mIoU collapses).
    running = jax.tree.map(lambda v: v, nnx.state(seg, nnx.BatchStat))
    fea_all = seg.decode(*seg.encode(masked, train=True), train=True)
    nnx.update(seg, running)
    logits_m = _unjoin(_logits(seg, fea_all, hw), len(masks))
    if terms.s4mim:
      if terms.l_sem > 0:
        out["loss_sem"] = _mean(cons.confident_ce(logits_m[0], yhat, conf, ignore, thr(yhat)))
      memory = state["extra"].get("prototypes")
      new_memory = _s4mim_losses(model, _unjoin(fea_all, len(masks))[0], u_w, masks[0], yhat, conf, ignore, memory,
                                 terms, out, thr)
      if new_memory is not None:
        updates["prototypes"] = new_memory
    if terms.l_mask > 0:
      out["loss_mask"] = _mean(cons.confident_ce(logits_m[-1], yhat, conf, ignore, thr(yhat)))

  ramp = unlabeled_weight(state["step"], terms.warmup_steps, terms.rampup_steps)
  if terms.warmup_steps or terms.rampup_steps:
    out["unlabeled_weight"] = ramp
  weights = dict(loss_s1=terms.w_s1, loss_s2=terms.w_s2, loss_fp=terms.w_fp)
  unsup = sum(w * out[k] for k, w in weights.items() if k in out)
  # The labeled weight moves with the ramp from the supervised baseline's w_x to UniMatch's scale * w_x.
  labeled = terms.w_x * (terms.scale + (1.0 - terms.scale) * (1.0 - ramp))
  total = labeled * out["loss_x"] + terms.scale * ramp * unsup
  extra_weights = dict(loss_rec=terms.l_rec, loss_agg=terms.l_agg, loss_sem=terms.l_sem, loss_mask=terms.l_mask)
  total = total + ramp * sum(w * out[k] for k, w in extra_weights.items() if k in out)
  return total, out, updates


def unlabeled_weight(step, warmup: int, rampup: int):
  """Weight r of every unlabeled term at `step` (our extension): 0 for `warmup` labeled-only steps, then a linear
  ramp over `rampup` steps to 1, while the labeled weight goes from w_x (the supervised baseline's loss) to
  scale * w_x. A from-scratch model's first pseudo-labels are mostly wrong and, at tau 0.95, only the largest
  classes pass; starting them later lets the supervised term make them worth learning from."""
  step = jnp.asarray(step, jnp.float32)
  if rampup <= 0:
    return (step >= warmup).astype(jnp.float32)
  return jnp.clip((step - warmup + 1.0) / rampup, 0.0, 1.0)


def make_warmup_step(mdef: base.ModelDef, tx, lr_fn, terms: Terms):
  """The step of the `warmup_steps` (our extension): the supervised baseline's step (L = w_x L_x, BN on the
  labeled images only), with the full step's metric keys (unlabeled ones read 0) so logs line up. The unlabeled
  images are not forwarded, so it costs what a supervised step does: the loop switches steps on the host (an
  in-graph `lax.cond` ran 2.3x slower than the full step on XLA CPU). None when there is no warm-up."""
  if not (terms.unlabeled and terms.warmup_steps > 0):
    return None
  full = make_train_step(mdef, tx, lr_fn, terms)
  off = dict(w_s1=0.0, w_s2=0.0, w_fp=0.0, l_rec=0.0, l_agg=0.0, l_sem=0.0, l_mask=0.0, scale=1.0,
             diagnostics=False)
  labeled_only = make_train_step(mdef, tx, lr_fn, dataclasses.replace(terms, **off))

  def warmup_step(state, batch, rng):
    _, metric_shapes = jax.eval_shape(full, state, batch, rng)
    new_state, metrics = labeled_only(state, batch, rng)
    return new_state, {k: metrics[k] if k in metrics else jnp.zeros(s.shape, s.dtype)
                       for k, s in metric_shapes.items()}

  return warmup_step


STEP_KEYS = ("dropout", "fp_low", "fp_high", "mim", "mask", "teacher")


def step_keys(rng) -> dict:
  """The step's random keys by use, from its `rng`: e.g. `fp_low` / `fp_high` draw the feature-perturbation
  channel masks (`cons.channel_keep`), so a comparison with another implementation can reproduce them."""
  return dict(zip(STEP_KEYS, jax.random.split(rng, len(STEP_KEYS))))


def make_train_step(mdef: base.ModelDef, tx, lr_fn, terms: Terms):
  """Pure `(state, batch, rng) -> (state, metrics)`; metrics hold every active loss term every step."""

  def train_step(state, batch, rng):
    keys = step_keys(rng)
    teacher_probs = mix_probs = None
    if terms.unlabeled and terms.teacher_pass:
      teacher_probs = _teacher_probs(mdef, state, batch[U + "image"], keys["teacher"], terms,
                                     batch[U + "ignore_mask"])
    elif terms.mix_teacher == "eval" and (terms.w_s1 > 0 or terms.w_s2 > 0):  # before BN sees this batch
      mix_probs = _eval_probs(mdef, state, batch[U + "image"])

    def objective(params):
      model = mdef.merge(params, state["batch_stats"])
      base.reseed_dropout(model, keys["dropout"])
      total, out, updates = _forward(model, state, batch, keys, teacher_probs, terms, mix_probs)
      return total, (base.batch_stats_of(model), out, updates)

    (loss, (batch_stats, out, updates)), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
    extra = {**state["extra"], **updates}
    if "class_prior" in extra:  # the labeled set's class frequencies, for the prior guard
      y = batch["label"]
      valid = (y != terms.ignore_label) & (y < terms.num_classes)
      extra["class_prior"] = _ema(state["extra"]["class_prior"], _class_shares(y, valid, terms.num_classes),
                                  terms.prior_momentum)
    new_state = base.apply_gradients(state, tx, grads, loss, batch_stats, extra)
    if terms.ema_decay > 0:
      new_state["extra"]["teacher"] = _ema(
          state["extra"]["teacher"], dict(params=new_state["params"], batch_stats=batch_stats), terms.ema_decay)
    lr = lr_fn(state["step"]) * base.current_lr_scale(new_state["opt"])
    return new_state, {"loss": loss, **out, "lr": lr}

  return train_step
