"""What a semi-supervised run needs to be understood: how many pseudo-labels pass the threshold, how often they
are right, and which classes they are, against the unlabeled images' own ground truth.

The truth travels in the unlabeled stream as `u_truth` only when `semi.diagnostics` is on, and only the
functions here read it: no loss does (tests/test_semi_diagnostics.py changes it and checks the step's loss and
update stay bit-identical). Two readers:
- the train step adds `pl_acc`, `pl_acc_conf`, `pl_tv` to its per-step metrics (averaged per log step);
- `SemiDiagnostics`, an evaluator, runs the step's pseudo-labelling on a fixed set of unlabeled images at
  every eval and writes per-class shares (`semi_diag/pl_share/<class>` vs `semi_diag/truth_share/<class>`),
  pass rates and precisions, plus the headline fractions, through the MetricWriter.
Pixels without truth (void 255, padding) count for the confidence fraction but not for accuracy or shares.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import sharding
from maskseg_jax.methods.base import EvalResult, tracked

NO_TRUTH = 255
SHARE_FLOOR = 0.01  # a class "is present" among confident pseudo-labels above this share (pl_classes)


def pseudo_label_sums(yhat, conf, threshold, ignore, truth, num_classes: int) -> dict:
  """Per-class pixel counts of one batch, all float32 (sums, so batches and devices add up exactly).

  threshold: scalar or per-pixel array (class-wise thresholds). Keys: valid, passed (scalars); truth,
  pred, pred_conf, hit_conf, truth_pass ([C]); correct, correct_conf, labeled, labeled_conf (scalars).
  """
  valid = ~ignore
  passed = (conf >= threshold) & valid
  has_truth = valid & (truth != NO_TRUTH) & (truth < num_classes)
  right = (yhat == truth) & has_truth
  onehot = lambda y, m: jnp.sum(jax.nn.one_hot(y, num_classes) * m[..., None], axis=(0, 1, 2))  # noqa: E731
  f = lambda m: jnp.sum(m).astype(jnp.float32)  # noqa: E731
  return dict(valid=f(valid), passed=f(passed), labeled=f(has_truth), labeled_conf=f(passed & has_truth),
              correct=f(right), correct_conf=f(right & passed),
              truth=onehot(truth, has_truth), pred=onehot(yhat, has_truth), pred_conf=onehot(yhat, passed & has_truth),
              hit_conf=onehot(yhat, right & passed), truth_pass=onehot(truth, passed & has_truth))


def _ratio(a, b):
  return a / jnp.maximum(b, 1.0)


def _share(counts):
  return counts / jnp.maximum(jnp.sum(counts), 1.0)


def total_variation(p, q):
  """0.5 * sum |p - q| of two class distributions: 0 identical, 1 disjoint."""
  return 0.5 * jnp.sum(jnp.abs(p - q))


def step_metrics(yhat, conf, threshold, ignore, truth, num_classes: int) -> dict:
  """Scalars for the train step: pseudo-label accuracy (all / confident pixels) and the class-share distance."""
  s = jax.lax.stop_gradient(pseudo_label_sums(yhat, conf, threshold, ignore, truth, num_classes))
  return {"pl_acc": _ratio(s["correct"], s["labeled"]), "pl_acc_conf": _ratio(s["correct_conf"], s["labeled_conf"]),
          "pl_tv": total_variation(_share(s["pred_conf"]), _share(s["truth"]))}


def summarize(sums: dict, prefix: str, class_names, thresholds=None) -> dict[str, float]:
  """Host-side scalars of accumulated sums: headline `prefix/x` and per-class `prefix/<what>/<class>`."""
  s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  ratio = lambda a, b: float(a / max(float(b), 1.0))  # noqa: E731
  share = lambda c: c / max(float(c.sum()), 1.0)  # noqa: E731
  pl, truth = share(s["pred_conf"]), share(s["truth"])
  out = {f"{prefix}/conf_frac": ratio(s["passed"], s["valid"]),
         f"{prefix}/pl_acc": ratio(s["correct"], s["labeled"]),
         f"{prefix}/pl_acc_conf": ratio(s["correct_conf"], s["labeled_conf"]),
         f"{prefix}/pl_tv": float(0.5 * np.abs(pl - truth).sum()),
         f"{prefix}/pl_classes": float(np.sum(pl > SHARE_FLOOR))}
  names = list(class_names) if class_names else [str(c) for c in range(len(truth))]
  per_class = {"pl_share": pl, "pl_share_all": share(s["pred"]), "truth_share": truth,
               "pass": s["truth_pass"] / np.maximum(s["truth"], 1.0),
               "precision": s["hit_conf"] / np.maximum(s["pred_conf"], 1.0)}
  if thresholds is not None:
    per_class["tau"] = np.asarray(thresholds, np.float64)
  for what, values in per_class.items():
    out.update({f"{prefix}/{what}/{n}": float(v) for n, v in zip(names, values)})
  return out


class SemiDiagnostics:
  """Evaluator: the train step's pseudo-labelling on the first `num_images` unlabeled images, against their truth.

  `label_fn(state, images, ignore, key) -> (yhat, conf, threshold)` is the method's own pseudo-labelling (teacher,
  ensemble, guards, class-wise thresholds), so what is measured is what the losses see; images are whole
  (padded to data.eval_size, padding marked with `pad_label`), not random crops, so evals are comparable.
  """

  def __init__(self, *, source, data_config, label_fn: Callable, mesh, num_classes: int, num_images: int,
               pad_label: int, class_names=None, thresholds_fn: Callable | None = None, name: str = "semi_diag"):
    from maskseg_jax.data import pipeline
    dc = data_config.copy_and_resolve_references()
    with dc.unlocked():
      dc.max_eval_images = int(num_images)
      dc.ignore_label = int(pad_label)  # padding is `pad_label`; void pixels keep 255 (no truth)
    self.name, self.mesh, self.class_names, self.thresholds_fn = name, mesh, class_names, thresholds_fn
    self._batches = lambda: pipeline.eval_batches(source, dc, process_index=jax.process_index(),
                                                  process_count=jax.process_count())
    self.num_items = pipeline.eval_num_items(source, dc)

    def step(state, batch):
      ignore = (batch["label"] == pad_label) | ~batch["valid"][:, None, None]
      yhat, conf, threshold = label_fn(state, batch["image"], ignore, jax.random.PRNGKey(0))
      truth = jnp.where(ignore, NO_TRUTH, batch["label"])
      return pseudo_label_sums(yhat, conf, threshold, ignore, truth, num_classes)

    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self._step = jax.jit(step, in_shardings=(repl, data), out_shardings=repl)

  def run(self, state, progress=None) -> EvalResult:
    total = None
    for local in tracked(self._batches(), progress, self.num_items):
      batch = sharding.to_global({k: local[k] for k in ("image", "label", "valid")}, self.mesh)
      sums = jax.device_get(self._step(state, batch))
      total = sums if total is None else jax.tree.map(np.add, total, sums)
    thresholds = None if self.thresholds_fn is None else jax.device_get(self.thresholds_fn(state))
    return EvalResult(summarize(total, self.name, self.class_names, thresholds))
