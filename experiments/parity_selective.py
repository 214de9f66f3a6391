"""Selective-masking scoring and the reconstruction loss against the authors' PyTorch code, on the same inputs.

    python experiments/parity_selective.py --reference=/tmp/selective_ref [--out=results.json]

`--reference` is a checkout of yuw422/Selective_Masking_Image_Reconstruction (read, never copied here). Needs
torch and pytorch_msssim (the reference pins 0.2.1) beside this package. The reference's own functions run:
`RecRandomMask.get_patch_loc` and `.apply` (tiles, random masks), `ReconstructionSelective._get_tile_loss_map` and
`._mask_image` (tile scores, top 50%), `Reconstruction._common_step` and `ReconstructionSelective._common_step`
(training losses). Their framework imports (pytorch_lightning, albumentations, torchmetrics, the CLI `config`
module) are replaced by small stand-ins, since only plain torch code is compared.

Shared inputs: CamVid images resized to 256 x 256 (or smooth synthetic images without the data), the reference's
VOC normalization, and one reconstruction model for both sides (a fixed random two-layer conv net in JAX, called
from torch through numpy: parity is about scoring and losses, not the network). Random draws are injected: the
project's scorer draws its masks from a JAX key, the same masks are recomputed here and handed to the reference's
`RecRandomMask.apply` in place of its `random.sample`.

Cases (gated ones must hold, else exit 1): tile grids; per-tile scores and the selected tiles, in the project's
"authors" settings (normalized space, Gaussian window, per-tile SSIM) and, reported only, in its defaults; the
5-draw scoring pass; the MS-SSIM loss (and the 3 px SSIM loss of the authors' selective loop) with its gradient
w.r.t. the reconstruction, in both metric spaces. Prints JSON.

The gates compare against the reference run in float64 (its SSIM windows computed in float64 too): float32 SSIM
rounding, amplified by mean^2 / variance in E[x^2] - E[x]^2, moves the reference's own float32 result by ~1e-5.
Float64 rows measure the formulas (both sides in float64), float32 rows this library's production numbers.
See docs/selective_masking.md for the results and the documented differences.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import importlib
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax.data.file_layouts import CAMVID_DEFAULT_ROOT
from maskseg_jax.losses.reconstruction import reconstruction_loss
from maskseg_jax.methods.selective_masking import tiles
from maskseg_jax.methods.selective_masking.scoring import metric_space

TOL = 1e-5
SIZE = 256
GRID = 21  # the authors' sqrt(512) tiles per side at 256 px
AUTHORS = dict(space="normalized", window="gaussian", scope="tile")
DEFAULTS = dict(space="unit", window="uniform", scope="image")
REFERENCE_FILES = ("models/reconstruction.py", "models/reconstruction_selective.py",
                   "augmentations/reconstruction.py", "utilities/augmentations.py")


# ------------------------------------------------------------------------------------------ the reference

def _stub(name: str, **attrs) -> types.ModuleType:
  module = types.ModuleType(name)
  module.__dict__.update(attrs)
  sys.modules[name] = module
  return module


def load_reference(path: str, model_factory):
  """Imports the reference's model and augmentation modules with stand-ins for its framework imports."""
  import torch
  import yaml

  if not os.path.isfile(os.path.join(path, "models", "reconstruction_selective.py")):
    sys.exit(f"--reference={path}: no models/reconstruction_selective.py there (expected a checkout of "
             "yuw422/Selective_Masking_Image_Reconstruction)")
  with open(os.path.join(path, "experiments/image_reconstruction/selective_ir/"
                         "reconstruction_selective_rec_pascal.yml")) as f:
    cfg = yaml.safe_load(f)

  class LightningModule(torch.nn.Module):
    def save_hyperparameters(self, *args, **kwargs):
      pass

    def log(self, name, value, **kwargs):
      self.logged = {**getattr(self, "logged", {}), name: value}

  class ImageOnlyTransform:
    def __init__(self, always_apply=False, p=0.5):
      self.p = p

  _stub("pytorch_lightning", LightningModule=LightningModule, LightningDataModule=object)
  _stub("torchmetrics", Metric=object)
  _stub("albumentations", ImageOnlyTransform=ImageOnlyTransform, BasicTransform=object)
  _stub("albumentations.pytorch", ToTensorV2=object)
  _stub("config", AUGMENTATION_ARGS=cfg["augmentation_args"], SP_COUNT=int(cfg["seg_count"]),
        CHECKPOINT_DIRECTORY="/nonexistent", EPOCHS=1,
        OPTIMIZER_ARGS={}, SCHEDULER_ARGS={})
  # The models package without its __init__ (that imports the segmentation U-Net and its zoo).
  _stub("models", __path__=[os.path.join(path, "models")], get_model=lambda name, args: model_factory())
  sys.path.insert(0, path)
  ref = types.SimpleNamespace(
      rec=importlib.import_module("models.reconstruction"),
      sel=importlib.import_module("models.reconstruction_selective"),
      aug=importlib.import_module("augmentations.reconstruction"),
      cfg=cfg)
  digest = hashlib.sha256()
  for name in REFERENCE_FILES:
    with open(os.path.join(path, name), "rb") as f:
      digest.update(f.read())
  ref.sha256 = digest.hexdigest()
  return ref


class Injected:
  """Stands in for the reference module's `random`: `sample` returns the queued masks' tile indices."""

  def __init__(self):
    self.queue = []

  def sample(self, population, k):
    idx = self.queue.pop(0)
    if len(idx) != k or len(population) <= max(idx):
      raise RuntimeError(f"injected mask has {len(idx)} of {len(population)} tiles, the reference draws {k}")
    return [int(i) for i in idx]


# ------------------------------------------------------------------------------------------ shared inputs

def load_images(data_dir: str, n: int) -> tuple[np.ndarray, str]:
  """float32[n, SIZE, SIZE, 3] in 0..255: CamVid images resized, or smooth synthetic images without them."""
  folder = os.path.join(data_dir, "JPEGImages")
  if os.path.isdir(folder):
    from PIL import Image
    names = sorted(os.listdir(folder))[::37][:n]
    imgs = [np.asarray(Image.open(os.path.join(folder, f)).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
            for f in names]
    return np.stack(imgs).astype(np.float32), f"camvid:{','.join(names)}"
  rng = np.random.default_rng(0)
  coarse = rng.uniform(0, 255, (n, 8, 8, 3))
  imgs = np.asarray(jax.image.resize(coarse, (n, SIZE, SIZE, 3), "cubic")) + rng.normal(0, 8, (n, SIZE, SIZE, 3))
  return np.clip(imgs, 0, 255).astype(np.float32), "synthetic"


def standin_model(seed: int = 0):
  """A fixed random conv net, NHWC jnp -> NHWC: the one reconstruction function both sides call."""
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 8)), jnp.float32)
  w2 = jnp.asarray(rng.normal(0, 0.2, (3, 3, 8, 3)), jnp.float32)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                   precision=jax.lax.Precision.HIGHEST)
  return jax.jit(lambda x: x + 0.5 * jnp.tanh(conv(jax.nn.relu(conv(x, w1)), w2)))


def torch_wrapper(fn):
  import torch

  class JaxModel(torch.nn.Module):
    def forward(self, x):  # NCHW torch -> the JAX function (float32, as in the project) -> NCHW torch
      out = np.asarray(fn(jnp.asarray(x.detach().numpy().transpose(0, 2, 3, 1), jnp.float32)))
      return torch.from_numpy(out.transpose(0, 3, 1, 2).copy()).to(x.dtype)

  return JaxModel()


class Normalization:
  """The reference's normalization (`albumentations.Normalize`, 0..1 mean/std) and the project's data config."""

  def __init__(self, cfg):
    norm = cfg["augmentation_args"]["normalization"]
    self.mean01, self.std01 = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    self.data_config = types.SimpleNamespace(mean=tuple(self.mean01 * 255), std=tuple(self.std01 * 255))

  def __call__(self, raw: np.ndarray) -> np.ndarray:
    return ((raw - self.mean01 * 255) / (self.std01 * 255)).astype(np.float32)


def to_nchw(x, dtype=np.float32):
  import torch
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype).transpose(0, 3, 1, 2)))


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# ------------------------------------------------------------------------------------------ cases

def case_grids(ref) -> dict:
  """Reference tile edges (`get_patch_loc`, 512 patches) vs `TileGrid` with the same number of tiles."""
  rows = {}
  for h, w in [(256, 256), (256, 341), (64, 64), (128, 128), (250, 250), (512, 512), (200, 300)]:
    locs = ref.aug.RecRandomMask.get_patch_loc(h, w, ref.cfg["seg_count"])
    r_edges = sorted({int(l[0]) for l in locs} | {h})
    c_edges = sorted({int(l[2]) for l in locs} | {w})
    g = len(r_edges) - 1
    same = g == len(c_edges) - 1 and g <= min(h, w)
    if same:
      grid = tiles.TileGrid(h, w, g)
      same = grid.row_bounds.tolist() == r_edges and grid.col_bounds.tolist() == c_edges
    rows[f"{h}x{w}"] = {"reference_tiles": [len(r_edges) - 1, len(c_edges) - 1], "same_edges": bool(same)}
  return {"sizes": rows}


def project_tile_scores(pred, target, grid, norm, mode) -> np.ndarray:
  space = metric_space(norm.data_config, mode["space"])
  return np.asarray(tiles.per_tile_scores(
      space(jnp.asarray(pred)), space(jnp.asarray(target)), grid.tile_ids(), grid.num_tiles, max_val=1.0,
      ssim_tile_ids=tiles.ssim_scope_ids(grid, mode["scope"]),
      gaussian=tiles.ssim_window_is_gaussian(mode["window"])))


def selected(scores: np.ndarray, k: int) -> np.ndarray:
  return np.asarray(tiles._top_k_mask(jnp.asarray(scores), k))


def reference_tile_scores(ref, model, z: np.ndarray, y: np.ndarray, locs, dtype) -> np.ndarray:
  """`_get_tile_loss_map` per image (batch 1, as the reference's scoring loop calls it)."""
  return np.stack([np.asarray(model._get_tile_loss_map(to_nchw(z[i:i + 1], dtype), to_nchw(y[i:i + 1], dtype),
                                                       locs)) for i in range(len(z))])


def case_tile_scores(ref, model, raw, norm, fn, grid, locs) -> dict:
  """One random mask per image, one reconstruction; every tile scored by both sides."""
  t, k = grid.num_tiles, tiles.num_masked_tiles(grid.num_tiles, 0.5)
  y = norm(raw)
  masks = np.asarray(tiles.random_tile_mask(jax.random.key(1), len(raw), t, 0.5))
  z = np.asarray(fn(tiles.apply_tile_mask(jnp.asarray(y), masks, grid.tile_ids(), 0.0)))
  ref_scores = reference_tile_scores(ref, float64_windows(copy.deepcopy(model)), z, y, locs, np.float64)
  ref_sel = selected(ref_scores, k)
  ref32 = reference_tile_scores(ref, model, z, y, locs, np.float32)
  out = {"reference_float32_vs_float64": {"score_rel_err": rel_err(ref32, ref_scores),
                                          "selection_identical": bool((selected(ref32, k) == ref_sel).all())}}
  variants = {"authors": AUTHORS, "defaults": DEFAULTS}
  variants.update({f"authors_but_{key}={DEFAULTS[key]}": {**AUTHORS, key: DEFAULTS[key]} for key in AUTHORS})
  for name, mode in variants.items():
    ours = project_tile_scores(z, y, grid, norm, mode)
    sel = selected(ours, k)
    out[name] = {"mode": mode, "score_rel_err": rel_err(ours, ref_scores),
                 "selection_identical": bool((sel == ref_sel).all()),
                 "selected_tiles_shared": float((sel & ref_sel).sum() / ref_sel.sum())}
  return out


def reference_selected_tiles(masked_img: np.ndarray, scores: np.ndarray, locs) -> np.ndarray:
  """Which tiles `_mask_image` filled: those equal, pixel for pixel, to the fill of its top-scored tile."""
  top = locs[int(np.argmax(scores))]
  fill = masked_img[top[0], top[2]]
  return np.array([(masked_img[l[0]:l[1], l[2]:l[3]] == fill).all() for l in locs])


def case_scoring_pass(ref, model, raw, norm, fn, grid, locs, draws=5) -> dict:
  """The whole scoring of a stage: `draws` injected random masks per image, reconstructions, averaged scores,
  top 50%: the reference's loop body (`selective_loop.selective_masking`) vs the project's jitted scorer."""
  b, t = len(raw), grid.num_tiles
  rng = jax.random.key(7)
  # The scorer draws exactly this internally (see tiles.make_selective_scorer): recompute to inject it.
  masks = np.asarray(tiles.random_tile_mask(rng, b * draws, t, 0.5)).reshape(b, draws, t)
  score = jax.jit(tiles.make_selective_scorer(
      lambda state, x: fn(x), grid, num_draws=draws, ratio=0.5, fill_color=0.0, max_val=1.0,
      to_score_space=metric_space(norm.data_config, AUTHORS["space"]), ssim_window=AUTHORS["window"],
      ssim_scope=AUTHORS["scope"]))
  ours_sel, ours_scores = (np.asarray(a) for a in score(None, jnp.asarray(norm(raw)), rng))

  injected = Injected()
  ref.aug.random = injected
  model = float64_windows(copy.deepcopy(model))
  masker = ref.aug.RecRandomMask(ref.cfg["seg_count"], fill_color=norm.mean01 * 255, ratio=0.5, p=1)
  ref_scores, ref_sel = [], []
  for i in range(b):
    y = to_nchw(norm(raw[i:i + 1]), np.float64)
    per_draw = []
    for j in range(draws):
      injected.queue.append(np.flatnonzero(masks[i, j]))
      # the reference masks the 0..255 image, then normalizes
      x = to_nchw(norm(masker.apply(raw[i])[None]), np.float64)
      per_draw.append(np.array(model._get_tile_loss_map(model(x), y, locs)))
    ave = np.mean(np.array(per_draw), axis=0)
    ref_scores.append(ave)
    ref_sel.append(reference_selected_tiles(model._mask_image(y[0], ave, locs), ave, locs))
  ref_scores, ref_sel = np.stack(ref_scores), np.stack(ref_sel)
  k = tiles.num_masked_tiles(t, 0.5)
  margin = np.sort(ours_scores, axis=1)[:, ::-1]
  out = {"images": b, "draws": draws, "score_rel_err": rel_err(ours_scores, ref_scores),
         "selection_identical": bool((ours_sel == ref_sel).all()),
         "selected_per_image": ref_sel.sum(1).tolist(),
         "min_gap_at_selection_boundary": float((margin[:, k - 1] - margin[:, k]).min())}
  return out


def float64_windows(model):
  """The reference model with its SSIM windows computed in float64 (pytorch_msssim builds them in float32),
  so a float64 comparison measures the formulas rather than the rounding of the window weights, which SSIM's
  E[x^2] - E[x]^2 amplifies by mean^2 / variance."""
  import torch

  for crit in (m for m in model.modules() if hasattr(m, "win")):
    size, sigma = crit.win.shape[-1], 1.5
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    crit.win = (g / g.sum()).reshape(1, 1, 1, size).repeat(crit.win.shape[0], 1, 1, 1)
  return model


def _reference_loss(ref, cls, z: np.ndarray, x: np.ndarray, y: np.ndarray, dtype):
  """`cls._common_step` on a model whose output is the leaf `z`: -> (logged terms, d loss / d z)."""
  import torch

  class Leaf(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.z = torch.nn.Parameter(to_nchw(z, dtype))

    def forward(self, x):
      return self.z

  leaf = Leaf()
  ref.sel_factory[0] = lambda: leaf
  model = cls("leaf", {})
  if dtype == np.float64:
    float64_windows(model)
  model.trainer = types.SimpleNamespace(is_global_zero=False, current_epoch=1, sanity_checking=False)
  loss = model._common_step("train", (to_nchw(x, dtype), to_nchw(y, dtype)), 1)
  loss.backward()
  terms = {k: float(v.detach()) for k, v in model.logged.items()}
  return terms, leaf.z.grad.numpy().transpose(0, 2, 3, 1)


@functools.partial(jax.jit, static_argnames="similarity")
def _loss_and_grad(z, y, similarity):
  (_, terms), grad = jax.value_and_grad(
      lambda zz: reconstruction_loss(zz, y, max_val=1.0, similarity=similarity), has_aux=True)(z)
  return terms, grad


def _project_loss(z: np.ndarray, y: np.ndarray, similarity: str, dtype):
  """`reconstruction_loss` and its gradient w.r.t. the reconstruction `z` (both already in the metric space)."""
  with jax.enable_x64(dtype == np.float64):
    terms, grad = _loss_and_grad(jnp.asarray(z, dtype), jnp.asarray(y, dtype), similarity)
    return {k: float(v) for k, v in terms.items()}, np.asarray(grad)


def case_losses(ref, raw, norm, fn, grid) -> dict:
  """Training losses on masked-input reconstructions: MS-SSIM (`Reconstruction`, the random baseline) and
  3 px SSIM (`ReconstructionSelective`, the selective loop), each in both metric spaces. In "unit" the
  reference's loss is fed [0, 1] images and gradients are w.r.t. the [0, 1] reconstruction."""
  y = norm(raw)
  masks = np.asarray(tiles.random_tile_mask(jax.random.key(3), len(raw), grid.num_tiles, 0.5))
  x = np.asarray(tiles.apply_tile_mask(jnp.asarray(y), masks, grid.tile_ids(), 0.0))
  z = np.asarray(fn(jnp.asarray(x)))
  out = {}
  for cls_name, cls, similarity in (("Reconstruction", ref.rec.Reconstruction, "ms_ssim"),
                                    ("ReconstructionSelective", ref.sel.ReconstructionSelective, "ssim3")):
    for space_name in ("normalized", "unit"):
      to_space = lambda a: np.asarray(metric_space(norm.data_config, space_name)(jnp.asarray(a)))
      zs, xs, ys = to_space(z), to_space(x), to_space(y)
      row = {"similarity": similarity}
      for label, dtype in (("float64", np.float64), ("float32", np.float32)):
        ref_terms, ref_grad = _reference_loss(ref, cls, zs, xs, ys, dtype)
        ours, grad = _project_loss(zs, ys, similarity, dtype)
        row[label] = {"reference": ref_terms, "ours": ours, "rel_err": {
            "L1": rel_err(ours["l1"], ref_terms["train/L1"]),
            "ssim": rel_err(ours[similarity], ref_terms["train/ssim"]),
            "loss": rel_err(ours["loss"], ref_terms["train/loss"]),
            "grad_wrt_reconstruction": rel_err(grad, ref_grad)}}
        if label == "float64":
          ref64_terms, ref64_grad = ref_terms, ref_grad
        else:  # the float32 rounding of each side alone, against the float64 reference
          row[label]["rel_err_vs_float64"] = {
              side: {"ssim": rel_err(t[key], ref64_terms["train/ssim"]),
                     "loss": rel_err(t[lkey], ref64_terms["train/loss"]),
                     "grad_wrt_reconstruction": rel_err(g, ref64_grad)}
              for side, t, g, key, lkey in (("reference", ref_terms, ref_grad, "train/ssim", "train/loss"),
                                            ("ours", ours, grad, similarity, "loss"))}
      out[f"{cls_name}/{space_name}"] = row
  return out


def case_odd_size() -> dict:
  """Reported, not gated: odd sides pool differently between MS-SSIM scales (see docs/selective_masking.md);
  pytorch_msssim is what the reference's loss calls."""
  from pytorch_msssim import ms_ssim as torch_ms_ssim
  from maskseg_jax.losses.reconstruction import ms_ssim

  rng = np.random.default_rng(5)
  side = 177
  y = np.asarray(jax.image.resize(rng.uniform(0, 1, (2, 12, 12, 3)), (2, side, side, 3), "cubic"), np.float32)
  z = np.clip(y + rng.normal(0, 0.05, y.shape), 0, 1).astype(np.float32)
  theirs = float(torch_ms_ssim(to_nchw(z), to_nchw(y), data_range=1.0, size_average=True))
  ours = float(ms_ssim(jnp.asarray(z), jnp.asarray(y), max_val=1.0).mean())
  return {f"{side}px": {"reference": theirs, "ours": ours, "rel_err": rel_err(ours, theirs)}}


def gates(cases: dict, tol: float = TOL) -> dict[str, bool]:
  """What must hold. Tile edges at the default crop; the authors'-settings scores and the whole scoring pass
  within `tol` and selecting the same tiles; every loss term and gradient within `tol` in float64 (the same
  math), and our float32 loss terms within `tol` of the float64 reference. Float32 gradients are reported only:
  the reference's own float32 rounding is of the same size there."""
  ts, sp, losses = cases["tile_scores"]["authors"], cases["scoring_pass"], cases["losses"]
  return {
      "tile_grid": bool(cases["tile_grid"]["sizes"][f"{SIZE}x{SIZE}"]["same_edges"]),
      "tile_scores": bool(ts["score_rel_err"] <= tol and ts["selection_identical"]),
      "scoring_pass": bool(sp["score_rel_err"] <= tol and sp["selection_identical"]),
      "losses": bool(all(max(v["float64"]["rel_err"].values()) <= tol
                         and max(v["float32"]["rel_err_vs_float64"]["ours"]["ssim"],
                                 v["float32"]["rel_err_vs_float64"]["ours"]["loss"]) <= tol
                         for v in losses.values())),
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--reference", required=True, help="checkout of yuw422/Selective_Masking_Image_Reconstruction")
  p.add_argument("--data", default=str(CAMVID_DEFAULT_ROOT),
                 help="VOC-layout folder (JPEGImages/); smooth synthetic images if it is missing")
  p.add_argument("--images", type=int, default=2)
  p.add_argument("--tolerance", type=float, default=TOL, help="relative tolerance of the gates")
  p.add_argument("--out", default="", help="also write the JSON here")
  args = p.parse_args(argv)
  import torch
  import pytorch_msssim

  torch.set_num_threads(1)
  factory = [lambda: None]
  ref = load_reference(os.path.abspath(args.reference), lambda: factory[0]())
  ref.sel_factory = factory
  fn = standin_model()
  factory[0] = lambda: torch_wrapper(fn)
  norm = Normalization(ref.cfg)
  raw, source = load_images(args.data, args.images)
  grid = tiles.TileGrid(SIZE, SIZE, GRID)
  locs = ref.aug.RecRandomMask.get_patch_loc(SIZE, SIZE, ref.cfg["seg_count"])
  model = ref.sel.ReconstructionSelective("standin", {})
  model.eval()
  with torch.no_grad():
    cases = {"tile_grid": case_grids(ref),
             "tile_scores": case_tile_scores(ref, model, raw, norm, fn, grid, locs),
             "scoring_pass": case_scoring_pass(ref, model, raw, norm, fn, grid, locs)}
  cases["losses"] = case_losses(ref, raw[:1], norm, fn, grid)
  cases["ms_ssim_odd_size"] = case_odd_size()
  gated = gates(cases, args.tolerance)
  result = {"reference": {"path": os.path.abspath(args.reference), "sha256_of_compared_files": ref.sha256,
                          "files": list(REFERENCE_FILES)},
            "torch": torch.__version__, "pytorch_msssim": getattr(pytorch_msssim, "__version__", "?"),
            "inputs": {"images": source, "size": SIZE, "grid": GRID, "tolerance_rel": args.tolerance},
            "cases": cases, "gates": gated, "ok": all(gated.values())}
  text = json.dumps(result, indent=1, sort_keys=False)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0 if result["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
