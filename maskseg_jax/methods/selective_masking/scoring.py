"""The scoring pass of a selective stage: every image of the partition through the previous stage's model.

One jitted function (`masking.tiles.make_selective_scorer`: draws, reconstructions, tile scores, top-k) runs
over fixed-size batches of canonical views, sharded like a train step (batch over the `data` axis, model state
replicated), so it scales with the mesh. Draws come from `fold_in(rng, batch index)`: for a given global batch
size the masks do not depend on the device count. Outputs are replicated (they are small), so every process
holds every mask.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from maskseg_jax import sharding
from maskseg_jax.errors import ConfigError
from maskseg_jax.methods import base
from maskseg_jax.methods.selective_masking import tiles
from maskseg_jax.methods.selective_masking.data import canonical_batches


def to_unit_range(data_config) -> Callable[[jax.Array], jax.Array]:
  """Normalized images -> [0, 1] (`x * std + mean) / 255`): SSIM needs non-negative intensities."""
  mean = jnp.asarray(data_config.mean, jnp.float32) / 255.0
  std = jnp.asarray(data_config.std, jnp.float32) / 255.0
  return lambda x: x * std + mean


# Where L1, SSIM and MS-SSIM (max_val 1) are computed, for the loss, the scores and the evaluation alike.
# "unit": [0, 1] intensities, where SSIM's constants and luminance term mean what they were designed for.
# "normalized": the mean/std-normalized values themselves, as the authors' code does (data_range 1.0 on them):
# L1 weighs about 1/std (~2.2x) more against MS-SSIM and the luminance term sees negative means.
METRIC_SPACES: dict[str, Callable] = {
    "unit": to_unit_range,
    "normalized": lambda data_config: (lambda x: x),
}


def metric_space(data_config, name: str) -> Callable[[jax.Array], jax.Array]:
  """Normalized images -> the images the loss and scores compare (`selective.metric_space`)."""
  if name not in METRIC_SPACES:
    raise ConfigError(f"selective.metric_space={name!r}; expected one of {sorted(METRIC_SPACES)}")
  return METRIC_SPACES[name](data_config)


def eval_apply(mdef: base.ModelDef) -> Callable:
  """(model state {"params", "batch_stats"}, images) -> eval-mode reconstruction."""
  return lambda st, x: mdef.merge(st["params"], st["batch_stats"])(x, train=False)


def make_score_step(mdef: base.ModelDef, grid: tiles.TileGrid, sel, data_config, mesh) -> Callable:
  """Jitted `(model state, images, rng) -> (tile masks bool[B, T], mean scores float[B, T])`."""
  score = tiles.make_selective_scorer(eval_apply(mdef), grid, num_draws=int(sel.num_draws),
                                      ratio=float(sel.mask_ratio), fill_color=0.0, max_val=1.0,
                                      to_score_space=metric_space(data_config, str(sel.metric_space)),
                                      sequential_draws=bool(sel.sequential_draws),
                                      ssim_window=str(sel.score_window), ssim_scope=str(sel.score_scope))
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(score, in_shardings=(repl, data, repl), out_shardings=(repl, repl))


def score_source(score_step: Callable, model_state: dict, source, data_config, grid: tiles.TileGrid, *,
                 batch_size: int, mesh, rng: jax.Array) -> tuple[list[str], np.ndarray, np.ndarray]:
  """-> (ids, masks bool[n, T], scores float32[n, T]) for every item of `source`, in source order."""
  n_dev = mesh.devices.size
  if batch_size % n_dev:
    raise ConfigError(f"selective.score_batch_size={batch_size} must be divisible by the {n_dev} devices")
  model_state = sharding.replicate(model_state, mesh)
  masks = np.zeros((len(source), grid.num_tiles), bool)
  scores = np.zeros((len(source), grid.num_tiles), np.float32)
  batches = canonical_batches(source, data_config, (grid.height, grid.width), batch_size,
                              process_index=jax.process_index(), process_count=jax.process_count())
  for i, local in enumerate(batches):
    images = sharding.to_global({"image": local["image"]}, mesh)["image"]
    m, s = score_step(model_state, images, jax.random.fold_in(rng, i))
    rows = np.arange(i * batch_size, min((i + 1) * batch_size, len(source)))
    masks[rows] = np.asarray(m)[:len(rows)]
    scores[rows] = np.asarray(s)[:len(rows)]
  ids = [source.id_of(j) for j in range(len(source))]
  return ids, masks, scores


def save_scores(path: str, ids: list[str], scores: np.ndarray) -> None:
  """Mean tile scores next to the masks (for analysis and checks), written atomically like the masks."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp.npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, ids=np.array(ids, dtype=np.str_), scores=np.asarray(scores, np.float32))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_scores(path: str) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as data:
    return {str(i): s for i, s in zip(data["ids"], data["scores"])}
