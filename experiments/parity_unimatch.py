"""UniMatch's train step here against LiheYoung/UniMatch's own PyTorch code, one step on identical inputs.

  python experiments/parity_unimatch.py --reference=/tmp/unimatch_ref [--size=33 --batch=2 --classes=4]
      [--backbone=resnet50] [--dtype=float64] [--out=experiments/results/parity_unimatch.json]

`--reference` is a checkout of github.com/LiheYoung/UniMatch; its code runs from there, unmodified: its
`DeepLabV3Plus` / `ResNet` modules, and the statements of `unimatch.py`'s `main` that build the optimizer and
the criteria and run one iteration of the training loop, taken from the file's syntax tree and executed with
CUDA calls mapped to the CPU (`.cuda()` is the identity, the DDP barrier a no-op). Needs PyTorch (CPU is enough).

Both sides get the same:
- weights: the reference model's (random init, BN affine parameters randomized and running statistics
  measured on random batches, so eval-mode passes are meaningful), its backbone through this project's
  torchvision importer (`model.init_from=<a .pth of the backbone state dict>`), the decoder by name mapping;
- batch: labeled x, y (with ignored pixels), unlabeled weak / strong 1 / strong 2 views, padding (ignore)
  masks, CutMix boxes; the reference's second unlabeled batch (`img_u_*_mix`) is this batch rolled by one, the
  partner this project pastes from;
- feature-perturbation masks: the reference's `nn.Dropout2d(0.5)` calls are answered with the channel masks this
  project's step draws from its rng (`step.step_keys`, `consistency.channel_keep`);
- threshold: tau is set inside the widest gap of the confidences near their median, so that no pixel sits on
  the threshold and float rounding cannot flip one.
The project runs with `semi.mix_teacher="eval"` (CutMix boxes labeled by an eval-mode pass, as the reference)
and `semi.fp_labeled=True` (the default). Prints JSON: every loss term and the mask ratio on both sides with
relative differences, the per-tensor parameter-update difference after one SGD step (momentum 0.9, wd 1e-4,
head lr x10), BN running statistics; exits 1 if a loss term differs by more than --loss_tol (relative) or a
parameter update by more than --update_tol (max |difference| over the tensor's max |update|).

Precision: float64 on both sides by default (the weights stay float32-representable, so both start from the same
numbers). At this size the step is ill-conditioned (the ASPP image-pooling BN normalizes one pooled vector per
image; late BNs see a few pixels), and float32 rounding alone moves the reference's own update by percent:
`--dtype=float32 --sensitivity` measures that floor. docs/parity_unimatch.md has the results and the differences.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import json
import os
import sys
import tempfile
import time

import numpy as np

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "semi.py")
TERMS = (("loss_x", "loss_x"), ("loss_u_s1", "loss_s1"), ("loss_u_s2", "loss_s2"), ("loss_u_w_fp", "loss_fp"),
         ("loss", "loss"), ("mask_ratio", "conf_frac"))  # (reference name, this project's metric)
# The reference decoder's torch modules -> this project's DeepLabV3+ paths (the backbone goes through the importer).
HEAD = {"head.b0.0": "aspp/branches/0/conv", "head.b0.1": "aspp/branches/0/bn",
        "head.b1.0": "aspp/branches/1/conv", "head.b1.1": "aspp/branches/1/bn",
        "head.b2.0": "aspp/branches/2/conv", "head.b2.1": "aspp/branches/2/bn",
        "head.b3.0": "aspp/branches/3/conv", "head.b3.1": "aspp/branches/3/bn",
        "head.b4.gap.1": "aspp/pool/conv", "head.b4.gap.2": "aspp/pool/bn",
        "head.project.0": "aspp/project/conv", "head.project.1": "aspp/project/bn",
        "reduce.0": "reduce/conv", "reduce.1": "reduce/bn",
        "fuse.0": "fuse/0/conv", "fuse.1": "fuse/0/bn", "fuse.3": "fuse/1/conv", "fuse.4": "fuse/1/bn",
        "classifier": "classifier"}
LEAVES = {"conv": {"weight": "kernel", "bias": "bias"},
          "bn": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--reference", default=os.environ.get("MASKSEG_UNIMATCH_REF", ""),
                 help="checkout of github.com/LiheYoung/UniMatch (default: $MASKSEG_UNIMATCH_REF)")
  p.add_argument("--reference_commit", default="",
                 help="the checkout's commit, recorded in the JSON (default: git rev-parse HEAD of --reference)")
  p.add_argument("--size", type=int, default=33, help="square crop (UniMatch crops are 16k+1: 321, 801)")
  p.add_argument("--batch", type=int, default=2, help="labeled = unlabeled batch")
  p.add_argument("--classes", type=int, default=4)
  p.add_argument("--backbone", default="resnet50", choices=("resnet50", "resnet101"))
  p.add_argument("--lr", type=float, default=0.001)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                 help="float64 (default): both sides in double precision from the same float32-representable "
                      "weights, so only implementation differences remain (see the module docstring)")
  p.add_argument("--loss_tol", type=float, default=1e-5)
  p.add_argument("--update_tol", type=float, default=1e-4)
  p.add_argument("--out", default="", help="also write the JSON here")
  p.add_argument("--sensitivity", action="store_true",
                 help="also run the reference on its own weights perturbed by float32 rounding (relative 2^-24 "
                      "noise) and report how much its update moves: the floor a float32 comparison can reach")
  p.add_argument("--no_default_run", action="store_true",
                 help="skip the second project run with its default semi.mix_teacher='weak' (one compile less)")
  return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ reference side

def _check_reference(path: str) -> str:
  need = ("unimatch.py", "model/semseg/deeplabv3plus.py", "model/backbone/resnet.py", "util/utils.py")
  missing = [n for n in need if not os.path.isfile(os.path.join(path, n))]
  if not path or missing:
    sys.exit(f"--reference={path!r} is not a UniMatch checkout (missing {missing or list(need)}); clone "
             "github.com/LiheYoung/UniMatch and pass its folder (or set MASKSEG_UNIMATCH_REF)")
  return os.path.abspath(path)


def _git_head(path: str) -> str:
  import subprocess
  try:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout; pass --reference_commit)"


def _main_statements(path: str):
  """Code objects of `unimatch.py`'s main(): the optimizer, the criteria, and the inner training loop."""
  tree = ast.parse(open(path).read(), path)
  main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
  picked = {}
  for node in ast.walk(main):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      if node.targets[0].id in ("optimizer", "criterion_u"):
        picked[node.targets[0].id] = node
    if isinstance(node, ast.If) and "criterion_l" in ast.unparse(node.body[0]):
      picked.setdefault("criterion_l", node)  # the outer if/elif/else (walk visits it before its elif)
    if isinstance(node, ast.For) and ast.unparse(node.iter) == "enumerate(loader)":
      picked["loop"] = node
  missing = {"optimizer", "criterion_u", "criterion_l", "loop"} - set(picked)
  if missing:
    sys.exit(f"{path}: could not find {sorted(missing)} in main(); this script reads UniMatch's unimatch.py")
  return {k: compile(ast.Module(body=[v], type_ignores=[]), path, "exec") for k, v in picked.items()}


@contextlib.contextmanager
def _cpu_reference(torch, dropout_masks):
  """CUDA calls as identities, DDP's barrier a no-op, and nn.Dropout2d answering with injected masks."""
  nn = torch.nn
  saved = (torch.Tensor.cuda, nn.Module.cuda, torch.distributed.barrier, nn.Dropout2d.forward)
  calls = []

  def dropout2d(self, x):
    keep = dropout_masks[len(calls)](x)  # torch [N, C, 1, 1] float, 0/1
    calls.append(tuple(x.shape))
    return x * keep / (1.0 - self.p)

  torch.Tensor.cuda = lambda self, *a, **k: self
  nn.Module.cuda = lambda self, *a, **k: self
  torch.distributed.barrier = lambda *a, **k: None
  nn.Dropout2d.forward = dropout2d
  try:
    yield calls
  finally:
    torch.Tensor.cuda, nn.Module.cuda, torch.distributed.barrier, nn.Dropout2d.forward = saved


def build_reference_model(torch, ref: str, args, dtype):
  sys.path.insert(0, ref)
  from model.backbone import resnet as ref_resnet
  from model.semseg.deeplabv3plus import DeepLabV3Plus
  # The reference always loads pretrained/<arch>.pth; its own constructor without that file.
  name = f"{args.backbone}_random_init"
  setattr(ref_resnet, name, lambda pretrained, **kw: getattr(ref_resnet, args.backbone)(pretrained=False, **kw))
  cfg = dict(backbone=name, replace_stride_with_dilation=[False, False, True], dilations=[6, 12, 18],
             nclass=args.classes, lr=args.lr, lr_multi=10.0, conf_thresh=0.5, batch_size=args.batch,
             criterion=dict(name="CELoss", kwargs=dict(ignore_index=255)))
  torch.manual_seed(args.seed)
  model = DeepLabV3Plus(cfg).to(dtype)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  g = torch.Generator().manual_seed(args.seed + 1)
  with torch.no_grad():
    for m in bns:  # non-trivial affine parameters, so a swapped scale/bias cannot hide
      m.weight.copy_(0.75 + 0.5 * torch.rand(m.weight.shape, generator=g, dtype=dtype))
      m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g, dtype=dtype))
      m.reset_running_stats()
      m.momentum = None  # cumulative average: running statistics of the calibration batches
    model.train()
    for _ in range(2):
      model(torch.randn(2 * args.batch, 3, args.size, args.size, generator=g, dtype=dtype))
    for m in bns:
      m.momentum = 0.1
      m.num_batches_tracked.zero_()
  return model, cfg


def run_reference(torch, ref: str, model, cfg, batch: dict, masks, tau: float):
  """One iteration of unimatch.py's loop on `model` (a copy is trained) -> (values, model after, namespace)."""
  from util.ohem import ProbOhemCrossEntropy2d
  from util.utils import AverageMeter
  model = copy.deepcopy(model)
  cfg = {**cfg, "conf_thresh": tau}
  t = {k: torch.from_numpy(v) for k, v in batch.items()}
  roll = lambda a: torch.roll(a, -1, 0)  # noqa: E731  (sample i's partner is i + 1, as this project's)
  l_batch = (t["x"].clone(), t["y"].clone())
  u_batch = (t["u_w"].clone(), t["u_s1"].clone(), t["u_s2"].clone(), t["ignore"].clone(), t["box1"].clone(),
             t["box2"].clone())
  mix_batch = (roll(t["u_w"]), roll(t["u_s1"]), roll(t["u_s2"]), roll(t["ignore"]), roll(t["box1"]),
               roll(t["box2"]))
  code = _main_statements(os.path.join(ref, "unimatch.py"))
  ns = dict(torch=torch, nn=torch.nn, SGD=torch.optim.SGD, ProbOhemCrossEntropy2d=ProbOhemCrossEntropy2d,
            model=model, cfg=cfg, local_rank=0, rank=1, epoch=0, trainloader_u=[None] * 10, total_iters=10,
            loader=zip([l_batch], [u_batch], [mix_batch]),
            **{k: AverageMeter() for k in ("total_loss", "total_loss_x", "total_loss_s", "total_loss_w_fp",
                                            "total_mask_ratio")})
  with _cpu_reference(torch, masks) as calls:
    for part in ("optimizer", "criterion_l", "criterion_u", "loop"):
      exec(code[part], ns)  # noqa: S102  (the reference's own statements)
  values = {name: float(torch.as_tensor(ns[name]).detach()) for name, _ in TERMS}
  return values, model, ns, calls


# ------------------------------------------------------------------------------------------ this project

def project_config(args, tau: float, backbone_file: str, mix_teacher: str):
  from maskseg_jax import config_base
  c = config_base.load_config(CONFIG, "synthetic")
  c.unlock()
  c.data.num_classes = args.classes
  c.data.crop_size = c.data.eval_size = (args.size, args.size)
  c.data.batch_size = args.batch
  c.model.update(backbone=args.backbone, width=1.0, deep_stem=True, output_stride=16, init_from=backbone_file)
  c.optim.update(name="sgd", lr=args.lr, momentum=0.9, weight_decay=1e-4, head_lr_mult=10.0, schedule="poly",
                 poly_power=0.9, warmup_steps=0)
  c.train.steps = 10
  c.semi.update(tau=tau, scale=0.5, w_x=1.0, w_s1=0.25, w_s2=0.25, w_fp=0.5, fp_dropout=0.5, fp_labeled=True,
                mix_teacher=mix_teacher, diagnostics=False, warmup_steps=0, rampup_steps=0)
  c.lock()
  return c


def torch_to_project(key: str, deep_stem: bool = True):
  """Reference state-dict key -> (flat path in the SemiModel state, 'conv' | 'bn'), or None (a BN counter)."""
  from maskseg_jax.models import resnet
  if key.startswith("backbone."):
    mapped = resnet.torch_variable(key[len("backbone."):], deep_stem=deep_stem)
    return None if mapped is None else (f"segmenter/backbone/{mapped[0]}", mapped[1])
  module, _, leaf = key.rpartition(".")
  if module not in HEAD:
    raise KeyError(f"reference key {key!r} has no counterpart in this project's DeepLabV3+")
  target = HEAD[module]
  kind = "bn" if target.endswith("/bn") else "conv"
  name = LEAVES[kind].get(leaf)
  return None if name is None else (f"segmenter/{target}/{name}", kind)


def _set_path(module, path: str, value):
  """Assigns `value` to the nnx variable at 'a/b/0/kernel' under `module`."""
  node = module
  *parts, last = path.split("/")
  for p in parts:
    node = node[int(p)] if p.isdigit() else getattr(node, p)
  getattr(node, last)[...] = value


def build_project(args, torch_model, tau: float, mix_teacher: str, workdir: str, dtype_name: str):
  import jax
  import jax.numpy as jnp
  from maskseg_jax import optim, pretrained
  from maskseg_jax.methods import base
  from maskseg_jax.methods.semi_supervised import model as semi_model
  from maskseg_jax.methods.semi_supervised import step as semi_step
  from maskseg_jax.methods.semi_supervised.terms import Terms
  from maskseg_jax.models import resnet
  import torch
  sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
  backbone_file = os.path.join(workdir, f"{args.backbone}_reference_backbone.pth")
  if not os.path.isfile(backbone_file):  # the reference backbone's own state dict, as a user would pass it
    torch.save({k[len("backbone."):]: v for k, v in torch_model.state_dict().items() if k.startswith("backbone.")},
               backbone_file)
  config = project_config(args, tau, backbone_file, mix_teacher)
  terms = Terms.from_config(config)
  mdef, tx, state = semi_model.build_model_and_state(config, terms)  # the backbone through the importer
  model = mdef.merge(state["params"], state["batch_stats"])
  flat = {**pretrained.flatten(state["params"]), **pretrained.flatten(state["batch_stats"])}
  backbone_diff = 0.0
  for key, value in sd.items():
    mapped = torch_to_project(key)
    if mapped is None:
      continue
    path, kind = mapped
    value = resnet.torch_to_flax(value, kind) if value.ndim == 4 else value
    if path.startswith("segmenter/backbone/"):  # loaded by the importer: must already be identical
      backbone_diff = max(backbone_diff, float(np.max(np.abs(np.asarray(flat[path]) - value))))
    else:
      _set_path(model, path, jnp.asarray(value, flat[path].dtype))
  _, params, stats = base.split_model(model)
  if dtype_name == "float64":
    params, stats = (jax.tree.map(lambda a: a.astype(jnp.float64), t) for t in (params, stats))
  state = dict(state, params=params, batch_stats=stats, opt=tx.init(params))
  lr_fn = optim.learning_rate(config.optim, config.train.steps)
  step = jax.jit(semi_step.make_train_step(mdef, tx, lr_fn, terms))
  return step, state, backbone_diff


def project_batch(batch: dict, dtype) -> dict:
  nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).astype(dtype)  # noqa: E731
  return {"image": nhwc(batch["x"]), "label": batch["y"].astype(np.int32), "u_image": nhwc(batch["u_w"]),
          "u_image_s1": nhwc(batch["u_s1"]), "u_image_s2": nhwc(batch["u_s2"]),
          "u_cutmix_box1": batch["box1"] == 1, "u_cutmix_box2": batch["box2"] == 1,
          "u_ignore_mask": batch["ignore"] == 255}


# ------------------------------------------------------------------------------------------ shared inputs

def make_batch(args, dtype) -> dict:
  """Labeled and unlabeled NCHW images, labels with ignored pixels, padding masks and CutMix boxes."""
  rng = np.random.default_rng(args.seed)
  b, s, c = args.batch, args.size, args.classes
  img = lambda: rng.standard_normal((b, 3, s, s)).astype(dtype)  # noqa: E731
  y = rng.integers(0, c, (b, s, s)).astype(np.int64)
  y[0, : s // 5] = 255                                # ignored rows of a labeled image
  u_w = img()
  u_s1 = (u_w + 0.5 * img()).astype(dtype)           # strong views: other images of the same scene
  u_s2 = (0.5 * u_w + img()).astype(dtype)
  ignore = np.zeros((b, s, s), np.int64)
  ignore[0, -(s // 4):] = 255                        # padding at the bottom of the first unlabeled crop
  ignore[-1, :, -(s // 6):] = 255                    # and at the right of the last
  box1 = np.zeros((b, s, s), np.float32)
  box2 = np.zeros((b, s, s), np.float32)
  for i in range(b):
    h, w = rng.integers(s // 4, s // 2, 2)
    y0, x0 = rng.integers(0, s - h), rng.integers(0, s - w)
    box1[i, y0:y0 + h, x0:x0 + w] = 1
    if i % 2 == 0:                                   # odd samples: no CutMix in view 2 (p = 0.5 in UniMatch)
      y0, x0 = rng.integers(0, s - h), rng.integers(0, s - w)
      box2[i, y0:y0 + w, x0:x0 + h] = 1
  return dict(x=img(), y=y, u_w=u_w, u_s1=u_s1, u_s2=u_s2, ignore=ignore, box1=box1, box2=box2)


def dropout_masks(rng_key, batch: int, rate: float, torch, dtype):
  """The project's FP channel masks for the step's rng, as the reference's two Dropout2d calls (c1, then c4) see
  them: the project drops the joined (x0, u0, x1, u1, ...) map, torch the concatenation (x0, x1, ..., u0, u1, ...)."""
  from maskseg_jax.losses import consistency as cons
  from maskseg_jax.methods.semi_supervised import step as semi_step
  keys = semi_step.step_keys(rng_key)
  order = np.array([2 * j for j in range(batch)] + [2 * j + 1 for j in range(batch)])

  def for_key(key):
    def mask(x):
      n, ch = x.shape[0], x.shape[1]
      if n != 2 * batch:
        raise RuntimeError(f"reference Dropout2d saw {n} rows; expected labeled + unlabeled = {2 * batch}")
      keep = np.asarray(cons.channel_keep(key, (n, 1, 1, ch), rate)).reshape(n, ch)[order]
      return torch.from_numpy(keep.astype(dtype)[:, :, None, None])
    return mask

  return [for_key(keys["fp_low"]), for_key(keys["fp_high"])]


def pick_tau(weak, mix) -> tuple[float, float]:
  """(tau, gap): the middle of the widest gap between the sorted confidences (weak and CutMix-partner pixels)
  that lies within the weak confidences' 30-70% quantiles, so about half the weak pixels pass."""
  weak = np.asarray(weak, np.float64).ravel()
  c = np.unique(np.concatenate([weak, np.asarray(mix, np.float64).ravel()]))
  lo, hi = np.quantile(weak, [0.3, 0.7])
  seg = c[(c >= lo) & (c <= hi)]
  if len(seg) < 2:
    raise RuntimeError("no two distinct confidences between the 30% and 70% quantiles; change --seed or --size")
  i = int(np.argmax(np.diff(seg)))
  return float((seg[i] + seg[i + 1]) / 2), float(seg[i + 1] - seg[i])


def rel(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1e-12)


def compare(args) -> dict:
  ref = _check_reference(args.reference)
  try:
    import torch
  except ImportError:
    sys.exit("this comparison needs PyTorch (pip install torch; the CPU wheel is enough)")
  import jax
  dtype_name = args.dtype
  jax.config.update("jax_enable_x64", dtype_name == "float64")
  t0 = time.time()
  tdtype, ndtype = (torch.float64, np.float64) if dtype_name == "float64" else (torch.float32, np.float32)
  torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
  model, cfg = build_reference_model(torch, ref, args, torch.float32)
  model = model.to(tdtype)  # float32 weights and statistics, exactly representable on both sides
  batch = make_batch(args, ndtype)
  rng = jax.random.PRNGKey(args.seed)
  masks = dropout_masks(rng, args.batch, 0.5, torch, ndtype)
  # A first reference pass only to read its confidences and place tau clear of every pixel.
  _, _, ns0, _ = run_reference(torch, ref, model, cfg, batch, masks, 0.5)
  valid = batch["ignore"] != 255
  tau, gap = pick_tau(ns0["conf_u_w"].numpy()[valid], ns0["conf_u_w_mix"].numpy()[np.roll(valid, -1, 0)])
  ref_values, trained, ns, calls = run_reference(torch, ref, model, cfg, batch, masks, tau)
  before = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  after = {k: v.detach().numpy() for k, v in trained.state_dict().items()}
  sensitivity = None
  if args.sensitivity:
    import torch as _t
    noisy = copy.deepcopy(model)
    g = _t.Generator().manual_seed(args.seed + 7)
    with _t.no_grad():
      for p in noisy.parameters():
        p.mul_(1 + 2.0 ** -24 * _t.randn(p.shape, generator=g, dtype=p.dtype))
    _, trained_n, _, _ = run_reference(torch, ref, noisy, cfg, batch, masks, tau)
    moved = []
    for (k, p0), p1, q0, q1 in zip(model.named_parameters(), trained.parameters(), noisy.parameters(),
                                   trained_n.parameters()):
      d_ref, d_noisy = (p1 - p0).detach().numpy(), (q1 - q0).detach().numpy()
      moved.append(float(np.max(np.abs(d_noisy - d_ref)) / max(float(np.max(np.abs(d_ref))), 1e-30)))
    sensitivity = dict(perturbation="weights x (1 + 2^-24 N(0, 1))", tensors=len(moved),
                       max_rel_update_change=max(moved), median_rel_update_change=float(np.median(moved)))
  t_ref = time.time() - t0

  with tempfile.TemporaryDirectory() as workdir:
    out = {}
    for mix_teacher in ("eval",) if args.no_default_run else ("eval", "weak"):
      step, state, backbone_diff = build_project(args, model, tau, mix_teacher, workdir, dtype_name)
      new_state, metrics = step(state, project_batch(batch, ndtype), rng)
      out[mix_teacher] = (state, jax.device_get(new_state), {k: float(v) for k, v in metrics.items()})
  t_proj = time.time() - t0 - t_ref

  from maskseg_jax import pretrained
  from maskseg_jax.models import resnet
  state, new_state, metrics = out["eval"]
  old_p, new_p = pretrained.flatten(state["params"]), pretrained.flatten(new_state["params"])
  new_s = pretrained.flatten(new_state["batch_stats"])
  terms = {}
  for ref_name, name in TERMS:
    terms[ref_name] = dict(reference=ref_values[ref_name], project=metrics[name],
                           rel_diff=rel(metrics[name], ref_values[ref_name]))
  updates, stats = {}, {"mean": [], "var": []}
  params_trained = {n for n, p in model.named_parameters()}
  for key in before:
    mapped = torch_to_project(key)
    if mapped is None:
      continue
    path, kind = mapped
    if key in params_trained:
      d_ref = after[key] - before[key]
      d_ref = resnet.torch_to_flax(d_ref, kind) if d_ref.ndim == 4 else d_ref
      d_proj = np.asarray(new_p[path], np.float64) - np.asarray(old_p[path], np.float64)
      scale = float(np.max(np.abs(d_ref)))
      diff = float(np.max(np.abs(d_proj - d_ref)))
      updates[key] = dict(max_abs_update=scale, max_abs_diff=diff, rel_diff=diff / max(scale, 1e-30))
    else:
      leaf = path.rsplit("/", 1)[-1]
      a, b = np.asarray(new_s[path], np.float64), after[key].astype(np.float64)
      stats[leaf].append(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)))
  worst = max(updates, key=lambda k: updates[k]["rel_diff"])
  weak_metrics = out["weak"][2] if "weak" in out else {}
  result = dict(
      reference=dict(repo="github.com/LiheYoung/UniMatch", commit=args.reference_commit or _git_head(ref),
                     files=["unimatch.py",
                     "model/semseg/deeplabv3plus.py", "model/backbone/resnet.py"]),
      setup=dict(backbone=args.backbone, deep_stem=True, output_stride=16, crop=args.size, batch=f"{args.batch}+"
                 f"{args.batch}", classes=args.classes, dtype=dtype_name, tau=tau, tau_gap=gap, lr=args.lr,
                 head_lr_mult=10.0, momentum=0.9, weight_decay=1e-4, seed=args.seed,
                 project_semi=dict(mix_teacher="eval", fp_labeled=True), model_align_corners=True,
                 model_dropout=0.0, reference_dropout2d_calls=[list(c) for c in calls[-2:]],
                 cutmix_pixels=[int(batch["box1"].sum()), int(batch["box2"].sum())],
                 backbone_import_max_abs_diff=backbone_diff),
      terms=terms,
      max_term_rel_diff=max(t["rel_diff"] for t in terms.values()),
      update=dict(tensors=len(updates), max_rel_diff=updates[worst]["rel_diff"], worst_tensor=worst,
                  max_abs_diff=max(u["max_abs_diff"] for u in updates.values()),
                  median_rel_diff=float(np.median([u["rel_diff"] for u in updates.values()]))),
      bn_running_stats=dict(
          max_rel_diff_mean=max(stats["mean"]), max_rel_diff_var=max(stats["var"]),
          note="torch updates running_var with the unbiased batch variance, flax with the biased one "
               "(a factor n/(n-1), n = pixels per channel in the batch): documented, not gated"),
      reference_self_sensitivity=sensitivity,
      project_default_mix_teacher_weak={
          ref_name: dict(project=weak_metrics[name], rel_diff_to_reference=rel(weak_metrics[name],
                                                                              ref_values[ref_name]))
          for ref_name, name in TERMS if name in weak_metrics},
      tolerances=dict(loss_rel=args.loss_tol, update_rel=args.update_tol),
      seconds=dict(reference=round(t_ref, 1), project=round(t_proj, 1)),
  )
  result["passed"] = bool(result["max_term_rel_diff"] <= args.loss_tol
                          and result["update"]["max_rel_diff"] <= args.update_tol)
  return result


def main(argv=None) -> int:
  args = parse_args(argv)
  result = compare(args)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return 0 if result["passed"] else 1


if __name__ == "__main__":
  sys.exit(main())
