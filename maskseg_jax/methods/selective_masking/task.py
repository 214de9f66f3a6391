"""Selective-masking image reconstruction pretraining (one stage), and the entry point of the stage driver.

`build(config, mesh, workdir)` makes the Task of the stage `config.selective.stage`: a U-Net with a 3-channel
head reconstructs crops whose masked tiles are filled with the mean colour, trained with `L1 + (1 - MS-SSIM)`
over the whole image in [0, 1] intensities (`selective.loss_ssim` and `metric_space` switch to the authors' 3 px
SSIM on normalized values, docs/selective_masking.md). Stage 0 (and every stage of the random strategies) draws
a fresh random mask per sample and step; a selective stage trains on the fixed masks in `<workdir>/masks.npz`
that the driver scored with the previous stage's model. `run(config, workdir, train_run)` (called by `train.run`) drives all stages:
see `stages.py`. Fine-tuning is plain `supervised` with `model.init_from` (see `pretrained`).
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maskseg_jax import optim, pretrained, sharding, visualize
from maskseg_jax.data import pipeline, sources
from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.losses.reconstruction import l1, ms_ssim, reconstruction_loss
from maskseg_jax.methods import base
from maskseg_jax.methods.selective_masking import tiles
from maskseg_jax.methods.selective_masking.data import (ReconstructionTransform, Stage, canonical_batches,
                                                fixed_random_masks, stage_plan, tile_grid)
from maskseg_jax.methods.selective_masking.scoring import eval_apply, metric_space
from maskseg_jax.models import build_model

MASKS_FILE = "masks.npz"
SCORES_FILE = "scores.npz"
FILL = 0.0  # masked pixels in normalized space: the colour data.mean


def pretrain_source(config):
  """The pretraining images (`selective.split`, default `data.train_split`), decode-checked up front."""
  dc = config.data
  src = sources.build_source(dc, config.selective.split or dc.train_split)
  sources.validate_source(src, dc.validate_items)
  return src


def ms_ssim_kwargs(sel) -> dict:
  return {"weights": tuple(float(w) for w in sel.ms_ssim_weights), "window": int(sel.ms_ssim_window)}


def init_model(config) -> tuple[base.ModelDef, dict, dict]:
  """-> (ModelDef, params, batch_stats) of the 3-channel reconstruction model, loaded from `model.init_from`
  (the previous stage) when set, head included."""
  model = build_model(config.model, 3, nnx.Rngs(params=config.seed, dropout=config.seed + 1))
  if config.model.init_from:
    pretrained.load_into(model, config.model.init_from, skip=())
  return base.split_model(model)


def reconstruction_step(mdef: base.ModelDef, tx, lr_fn: Callable, data_config, sel) -> Callable:
  """Pure train step on {"image", "target", "mask"}: fill the masked pixels, reconstruct, L1 + (1 - MS-SSIM)
  (`sel.loss_ssim`), both in `sel.metric_space`."""
  space = metric_space(data_config, str(sel.metric_space))
  kwargs = ms_ssim_kwargs(sel)

  def train_step(state, batch, rng):
    masked = jnp.where(batch["mask"][..., None], FILL, batch["image"])

    def objective(params):
      model = mdef.merge(params, state["batch_stats"])
      base.reseed_dropout(model, rng)
      pred = model(masked, train=True)
      loss, terms = reconstruction_loss(space(pred), space(batch["target"]), max_val=1.0, ms_ssim_kwargs=kwargs,
                                        similarity=str(sel.loss_ssim))
      return loss, (terms, base.batch_stats_of(model))

    (loss, (terms, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
    new_state = base.apply_gradients(state, tx, grads, loss, batch_stats)
    return new_state, {**terms, "lr": lr_fn(state["step"])}

  return train_step


def picture_rows(raw: np.ndarray, pmask: np.ndarray, recon: np.ndarray, data_config) -> list[list[np.ndarray]]:
  """Per image: selected tiles tinted red | masked input (mean colour) | reconstruction."""
  mean = np.asarray(data_config.mean, np.float32)
  rows = []
  for img, m, rec in zip(raw, pmask, recon):
    m = m[..., None]
    tinted = np.where(m, 0.5 * img + 0.5 * np.array(visualize.SELECTED_COLOR, np.float32), img).astype(np.uint8)
    masked = np.where(m, np.clip(np.round(mean), 0, 255), img).astype(np.uint8)
    rows.append([tinted, masked, visualize.denormalize(rec, data_config.mean, data_config.std)])
  return rows


def reconstruction_picture(rows: list[list[np.ndarray]], data_config) -> np.ndarray:
  """`picture_rows` as one titled picture with a legend of the two tile markings."""
  mean = tuple(int(v) for v in np.clip(np.round(np.asarray(data_config.mean)), 0, 255))
  legend = [("selected tile", visualize.SELECTED_COLOR), ("masked input", mean)]
  return visualize.with_legend(visualize.grid(rows), legend, titles=("selected tiles", "masked input",
                                                                     "reconstruction"))


def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in batch order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # replicated shards repeat rows
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


class ReconstructionEvaluator:
  """Reconstruction loss terms of a model on fixed-masked canonical views, plus a picture grid.

  `mask_sets` maps a metric prefix to {image id: bool[T]} (e.g. "val": the stage's masks, "val_random": fixed
  random masks, comparable across stages and strategies); every set is evaluated with one jitted step.
  """

  def __init__(self, *, source, data_config, sel, grid: tiles.TileGrid, mask_sets: dict[str, dict], mdef, mesh,
               num_images: int = 4):
    self.name = "reconstruction"
    self.source, self.dc, self.grid, self.mesh = source, data_config, grid, mesh
    self.mask_sets, self.num_images = mask_sets, num_images
    self.ids = [source.id_of(i) for i in range(len(source))]
    space, kwargs, apply = metric_space(data_config, str(sel.metric_space)), ms_ssim_kwargs(sel), eval_apply(mdef)

    def step(model_state, images, pmask, valid):
      recon = apply(model_state, jnp.where(pmask[..., None], FILL, images))
      pred, target = space(recon), space(images)
      v = valid.astype(jnp.float32)
      l1_sum, l1_count = l1(pred, target, v[:, None, None, None])
      masked_sum, masked_count = l1(pred, target, (pmask & valid[:, None, None])[..., None])
      ms_sum = (ms_ssim(pred, target, max_val=1.0, **kwargs) * v).sum()
      sums = dict(l1_sum=l1_sum, l1_count=l1_count, masked_sum=masked_sum, masked_count=masked_count,
                  ms_sum=ms_sum, count=v.sum())
      return sums, recon

    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self._step = jax.jit(step, in_shardings=(repl, data, data, data), out_shardings=(repl, data))

  def run(self, state, progress=None) -> base.EvalResult:
    model_state = {"params": state["params"], "batch_stats": state["batch_stats"]}
    tile_ids = self.grid.tile_ids()
    totals = {prefix: None for prefix in self.mask_sets}
    images = {}
    batches = canonical_batches(self.source, self.dc, (self.grid.height, self.grid.width),
                                int(self.dc.eval_batch_size), process_index=jax.process_index(),
                                process_count=jax.process_count())
    for i, local in enumerate(base.tracked(batches, progress, len(self.source))):
      for prefix, masks in self.mask_sets.items():
        pmask = np.stack([masks[self.ids[j]][tile_ids] if j >= 0 else np.zeros(tile_ids.shape, bool)
                          for j in local["index"]])
        batch = sharding.to_global({"image": local["image"], "mask": pmask, "valid": local["valid"]}, self.mesh)
        sums, recon = self._step(model_state, batch["image"], batch["mask"], batch["valid"])
        sums = {k: float(v) for k, v in jax.device_get(sums).items()}
        prev = totals[prefix]
        totals[prefix] = sums if prev is None else {k: prev[k] + sums[k] for k in prev}
        if i == 0 and self.num_images > 0 and jax.process_index() == 0:
          n = min(self.num_images, int(local["valid"].sum()))
          rows = picture_rows(local["raw_image"][:n], pmask[:n], _local_rows(recon)[:n], self.dc)
          images[f"{prefix}/reconstruction"] = reconstruction_picture(rows, self.dc)
    scalars = {}
    for prefix, t in totals.items():
      l1_mean = t["l1_sum"] / max(t["l1_count"], 1.0)
      ms_mean = t["ms_sum"] / max(t["count"], 1.0)
      scalars.update({f"{prefix}/loss": l1_mean + 1.0 - ms_mean, f"{prefix}/l1": l1_mean,
                      f"{prefix}/ms_ssim": ms_mean,
                      f"{prefix}/l1_masked": t["masked_sum"] / max(t["masked_count"], 1.0)})
    return base.EvalResult(scalars, images)


def load_stage_masks(workdir: str, grid: tiles.TileGrid, ids: list[str]) -> dict[str, np.ndarray]:
  """The scored masks of a selective stage; every image of the stage must have one."""
  path = os.path.join(workdir, MASKS_FILE)
  masks, _ = tiles.load_tile_masks(path, expected_grid=grid)
  missing = [i for i in ids if i not in masks]
  if missing:
    raise DataError(f"tile mask file {path} lacks {len(missing)} of this stage's images, e.g. {missing[:3]}; "
                    "delete it so the driver rescores the stage")
  return masks


def stage_of(config, num_images: int) -> Stage:
  plan = stage_plan(num_images, config.selective)
  k = int(config.selective.stage)
  if not 0 <= k < len(plan):
    raise ConfigError(f"selective.stage={k} but the plan has stages 0..{len(plan) - 1} (it is set by the stage "
                      "driver; run the pretraining config as a whole)")
  return plan[k]


def build(config, mesh, workdir: str, *, source=None) -> base.Task:
  """The Task of one stage (`config.selective.stage`, set by the driver together with train.steps)."""
  dc, sel = config.data, config.selective
  source = source if source is not None else pretrain_source(config)
  stage = stage_of(config, len(source))
  grid = tile_grid(dc, sel)
  sharding.check_batch_size(int(dc.batch_size))
  ids = [source.id_of(int(i)) for i in stage.images]
  masks = load_stage_masks(workdir, grid, ids) if stage.selective else None
  mdef, params, batch_stats = init_model(config)
  tx = optim.make_optimizer(config.optim, int(config.train.steps), params)
  state = base.new_state(params, batch_stats, tx)
  transform = ReconstructionTransform(dc, sel, grid, masks, os.path.join(workdir, MASKS_FILE))
  train_iter = pipeline.train_iterator(sources.subset(source, stage.train), dc, config.seed,
                                       process_index=jax.process_index(), process_count=jax.process_count(),
                                       transform=transform)
  step = reconstruction_step(mdef, tx, optim.learning_rate(config.optim, int(config.train.steps)), dc, sel)
  val = sources.subset(source, stage.val)
  val_ids = [val.id_of(i) for i in range(len(val))]
  mask_sets = {"val_random": fixed_random_masks(val_ids, grid.num_tiles, float(sel.mask_ratio), config.seed)}
  if masks is not None:
    mask_sets = {"val": {i: masks[i] for i in val_ids}, **mask_sets}
  evaluator = ReconstructionEvaluator(source=val, data_config=dc, sel=sel, grid=grid, mask_sets=mask_sets,
                                      mdef=mdef, mesh=mesh, num_images=int(config.train.num_images))
  return base.Task(state=state, train_step=step, train_iter=train_iter, evaluators=[evaluator],
                   images_per_step=int(dc.batch_size))


def run(config, workdir: str, train_run) -> dict:
  """`train.run` hands the whole pretraining to the stage driver (one `train_run` per stage)."""
  from maskseg_jax.methods.selective_masking import stages  # stages imports this module: import here, not at the top
  return stages.run(config, workdir, train_run)
