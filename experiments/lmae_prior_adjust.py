"""Does a logit adjustment by the training class prior help L-MAE's completion? (a probe on the dev split)

  python experiments/lmae_prior_adjust.py --runs=runs/dev/recipe_s0,runs/dev/mix110_s0 --taus=0,0.15,-0.15,0.3,-0.3

The class-weighted loss (eq. 10-12) tilts predictions toward rare classes, and the Lovasz term does not. This
scores, on `train@dev` with the recipe's evaluation settings (one pass), the model's logits shifted by
-tau x log(training class frequency) (from each run's class_frequencies.json) before mirror averaging and the
fill blend: tau > 0 favours rare classes more, tau < 0 less. The shift is applied by wrapping the model, so no
library code carries the probe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmae_select as sel  # noqa: E402

from maskseg_jax.config_base import load_config  # noqa: E402
from maskseg_jax.methods.lmae import inference as inf  # noqa: E402

SHIFT = {"tau": 0.0, "log_prior": None}


class _Shifted:
  """The model with its logits shifted by -tau x log prior (the attributes inference reads pass through)."""

  def __init__(self, model):
    self.model, self.patch_size = model, model.patch_size

  def __call__(self, *args, **kwargs):
    return self.model(*args, **kwargs).astype(jnp.float32) - SHIFT["tau"] * SHIFT["log_prior"]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", required=True)
  ap.add_argument("--taus", default="0,0.15,-0.15,0.3,-0.3")
  ap.add_argument("--split", default="train@dev")
  args = ap.parse_args()
  single = inf.single_pass_logits
  inf.single_pass_logits = lambda model, *a, **k: single(_Shifted(model), *a, **k)  # read when the eval traces
  base = load_config("lmae", "camvid,recipe,dev")
  runs = args.runs.split(",")
  for tau in (float(t) for t in args.taus.split(",")):
    SHIFT["tau"] = tau
    rows = []
    for run in runs:
      with open(os.path.join(run, "class_frequencies.json")) as f:
        SHIFT["log_prior"] = jnp.log(jnp.asarray(json.load(f)["frequencies"], jnp.float32) + 1e-6)
      rows.append(sel.evaluate(run, args.split, {"lmae.progressive_reveal": ()}, base))
    m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(json.dumps({"tau": tau, "pa_miou_bf": m["val/pa_miou"], "pa_miou_random": m["val_random/pa_miou"],
                      "margin_bf": m["val/margin_pa_miou"], "margin_random": m["val_random/margin_pa_miou"],
                      "score": m["score"], "score_per_run": [r["score"] for r in rows]}), flush=True)


if __name__ == "__main__":
  main()
