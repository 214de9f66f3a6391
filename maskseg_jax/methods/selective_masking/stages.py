"""The selective-masking stage driver: partitions, scoring passes and one training-loop run per stage.

Layout of a pretraining run folder:

  <workdir>/stage_k/            a complete run folder of stage k (checkpoints/, metrics.jsonl, images/, config.json)
  <workdir>/stage_k/masks.npz   the fixed tile masks of a selective stage, keyed by image id (scores.npz beside)
  <workdir>/stage_k/done        written after the stage's final checkpoint: its step and last eval scalars

Resuming is the train loop's: rerunning the same command skips every stage with a `done` marker, reuses the
stored masks of the stage it was in (rescoring only if the file is missing) and continues that stage from its
latest checkpoint, so an interrupted run ends with the same weights as an uninterrupted one.
`train.stop_at` counts steps over the whole pretraining (stage k starts after the steps of stages 0..k-1).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from maskseg_jax import checkpointing, sharding
from maskseg_jax.data import sources
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods.selective_masking import scoring as selective_scoring
from maskseg_jax.methods.selective_masking import task as sm
from maskseg_jax.methods.selective_masking import tiles
from maskseg_jax.methods.selective_masking.data import Stage, stage_plan, tile_grid
from maskseg_jax.metric_writer import MetricWriter

SCORE_STREAM = 0x5C0E  # rng stream of scoring draws, folded into the stage's seed


def stage_dir(workdir: str, index: int) -> str:
  return os.path.join(workdir, f"stage_{index}")


def is_done(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "done"))


def stage_config(config, stage: Stage, plan: list[Stage], workdir: str) -> ml_collections.ConfigDict:
  """Stage k's config: its index, steps and seed, the global stop_at mapped into it, and `model.init_from`
  pointing at stage k-1 (stage 0 keeps the user's, usually none)."""
  c = config.copy_and_resolve_references()
  c.unlock()
  offset = sum(s.steps for s in plan[:stage.index])
  c.selective.stage = stage.index
  c.train.steps = stage.steps
  c.seed = int(config.seed) + stage.index
  stop = int(config.train.stop_at)
  c.train.stop_at = stop - offset if offset < stop <= offset + stage.steps else -1
  if stage.index > 0:
    c.model.init_from = stage_dir(workdir, stage.index - 1)
  c.lock()
  return c


def _check(config) -> None:
  sel = config.selective
  if int(sel.stage) >= 0:
    raise ConfigError(f"selective.stage={sel.stage} is set by the stage driver; leave it at -1")
  if int(config.train.steps) not in (0, int(sel.steps_per_stage)):
    raise ConfigError(f"train.steps={config.train.steps}: selective-masking stages train "
                      f"selective.steps_per_stage={sel.steps_per_stage} steps each; set that instead")


def score_stage(config, stage: Stage, source, mesh, directory: str) -> dict[str, np.ndarray]:
  """Scores every image of the stage with the previous stage's final model; writes masks, scores, a picture."""
  sel, dc = config.selective, config.data
  grid = tile_grid(dc, sel)
  start = time.perf_counter()
  mdef, params, batch_stats = sm.init_model(config)  # init_from = the previous stage
  model_state = {"params": params, "batch_stats": batch_stats}
  step = selective_scoring.make_score_step(mdef, grid, sel, dc, mesh)
  part = sources.subset(source, stage.images)
  rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), SCORE_STREAM)
  ids, masks, scores = selective_scoring.score_source(step, model_state, part, dc, grid,
                                                      batch_size=int(sel.score_batch_size), mesh=mesh, rng=rng)
  by_id = dict(zip(ids, masks))
  if jax.process_index() == 0:
    selective_scoring.save_scores(os.path.join(directory, sm.SCORES_FILE), ids, scores)
    tiles.save_tile_masks(os.path.join(directory, sm.MASKS_FILE), by_id, grid)  # last: its presence = scored
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"selective stage {stage.index} masks")
  seconds = time.perf_counter() - start
  writer = MetricWriter(directory)
  try:
    n = int(config.train.num_images)
    if n > 0:  # the first images of the partition: selected tiles, masked input, the previous model's output
      first = sources.subset(part, range(min(n, len(part))))
      picture = sm.ReconstructionEvaluator(source=first, data_config=dc, sel=sel, grid=grid,
                                           mask_sets={"scoring": {i: by_id[i] for i in ids[:len(first)]}},
                                           mdef=mdef, mesh=mesh, num_images=n).run(model_state)
      for name, image in picture.images.items():
        writer.write_image(0, name.replace("/", "_"), image)
    writer.write_scalars(0, {"images": len(ids), "seconds": seconds, "images_per_s": len(ids) / seconds},
                         split="scoring")
    writer.log(f"[stage {stage.index}] scored {len(ids)} images in {seconds:.1f}s -> {directory}/{sm.MASKS_FILE}")
  finally:
    writer.close()
  return by_id


def run(config, workdir: str, train_run: Callable) -> dict:
  """Runs (or resumes) every stage for `mode=train`; `mode=eval` evaluates the last stage. Returns its scalars.

  `train_run(config, workdir, task=...)` is the training loop (`train.run`, which hands over here): passed in so
  that methods never import the loop above them.
  """
  _check(config)
  mesh = sharding.make_mesh()
  source = sm.pretrain_source(config)
  plan = stage_plan(len(source), config.selective)
  if config.mode == "eval":
    last = plan[-1]
    cfg = stage_config(config, last, plan, workdir)
    directory = stage_dir(workdir, last.index)
    return train_run(cfg, directory, task=sm.build(cfg, mesh, directory, source=source))
  if config.mode != "train":
    raise ConfigError(f"config.mode={config.mode!r} is not available for selective_masking; expected 'train' "
                      "(all stages) or 'eval' (the last stage)")
  result = {}
  for stage in plan:
    directory = stage_dir(workdir, stage.index)
    if is_done(directory):
      with open(os.path.join(directory, "done")) as f:
        result = json.load(f)["eval"]
      continue
    cfg = stage_config(config, stage, plan, workdir)
    if stage.index > 0 and not is_done(stage_dir(workdir, stage.index - 1)):
      raise ConfigError(f"stage {stage.index} needs the finished stage {stage.index - 1} in "
                        f"{stage_dir(workdir, stage.index - 1)}")
    os.makedirs(directory, exist_ok=True)
    if jax.process_index() == 0:
      with open(os.path.join(directory, "config.json"), "w") as f:
        f.write(cfg.to_json_best_effort(indent=1, sort_keys=True))
    if stage.selective and not os.path.isfile(os.path.join(directory, sm.MASKS_FILE)):
      score_stage(cfg, stage, source, mesh, directory)
    result = train_run(cfg, directory, task=sm.build(cfg, mesh, directory, source=source))
    ckpt = checkpointing.Checkpointer(os.path.join(directory, "checkpoints"))
    step = ckpt.latest_step()
    ckpt.close()
    if step != stage.steps:
      print(f"selective masking stopped inside stage {stage.index} at step {step}/{stage.steps}; rerun the same "
            "command to resume", flush=True)
      return result
    if jax.process_index() == 0:
      with open(os.path.join(directory, "done"), "w") as f:
        json.dump({"step": step, "eval": result}, f, indent=1, sort_keys=True)
  return result
