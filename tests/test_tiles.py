"""Tile grids, tile masks, per-tile scores and the selective scorer, checked against brute-force numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from maskseg_jax.errors import ConfigError, DataError
from maskseg_jax.methods.selective_masking import tiles


def _np_tile_scores(pred, target, grid):
  """Loop over tiles; SSIM by the 2004 formula with a uniform 3x3 window on reflect-padded float64 images."""
  pred, target = pred.astype(np.float64), target.astype(np.float64)
  pad = lambda a: np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  px, py = pad(pred), pad(target)
  b, h, w, c = pred.shape
  ssim = np.zeros((b, h, w, c))
  for i in range(h):
    for j in range(w):
      wx, wy = px[:, i:i + 3, j:j + 3], py[:, i:i + 3, j:j + 3]
      mx, my = wx.mean((1, 2)), wy.mean((1, 2))
      vx = ((wx - mx[:, None, None]) ** 2).mean((1, 2))
      vy = ((wy - my[:, None, None]) ** 2).mean((1, 2))
      cxy = ((wx - mx[:, None, None]) * (wy - my[:, None, None])).mean((1, 2))
      c1, c2 = 0.01**2, 0.03**2
      ssim[:, i, j] = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
  per_pixel = np.abs(pred - target).mean(-1) + 1.0 - ssim.mean(-1)
  rb, cb = grid.row_bounds, grid.col_bounds
  out = np.zeros((b, grid.num_tiles))
  for r in range(grid.grid):
    for q in range(grid.grid):
      out[:, r * grid.grid + q] = per_pixel[:, rb[r]:rb[r + 1], cb[q]:cb[q + 1]].mean((1, 2))
  return out


def _images(seed, shape):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape)
  x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2)) / 3.0
  return x.astype(np.float32)


def test_tile_ids_absorb_remainder():
  grid = tiles.TileGrid(64, 64, 5)
  ids = grid.tile_ids()
  assert ids.shape == (64, 64) and ids.dtype == np.int32
  assert set(np.unique(ids)) == set(range(25))
  assert list(np.diff(grid.row_bounds)) == [12, 12, 12, 12, 16]
  sizes = np.array([12, 12, 12, 12, 16])
  np.testing.assert_array_equal(grid.tile_sizes(), np.outer(sizes, sizes).ravel())
  assert ids[0, 0] == 0 and ids[0, 63] == 4 and ids[47, 0] == 15 and ids[48, 0] == 20 and ids[63, 63] == 24
  # Non-square crop: rows and columns split independently.
  g2 = tiles.TileGrid(30, 20, 3)
  np.testing.assert_array_equal(np.diff(g2.row_bounds), [10, 10, 10])
  np.testing.assert_array_equal(np.diff(g2.col_bounds), [6, 6, 8])
  assert g2.tile_ids()[29, 19] == 8 and g2.tile_ids()[10, 6] == 4
  with pytest.raises(ConfigError, match="do not fit"):
    tiles.TileGrid(4, 16, 5)


def test_random_tile_mask_exact_count_and_deterministic():
  assert tiles.num_masked_tiles(441, 0.5) == 220 and tiles.num_masked_tiles(25, 0.5) == 12
  m = tiles.random_tile_mask(jax.random.key(0), 16, 25, 0.5)
  assert m.shape == (16, 25) and m.dtype == jnp.bool_
  np.testing.assert_array_equal(m.sum(1), 12)
  assert len({tuple(r) for r in np.asarray(m)}) > 1  # rows differ
  np.testing.assert_array_equal(m, tiles.random_tile_mask(jax.random.key(0), 16, 25, 0.5))
  assert not np.array_equal(m, tiles.random_tile_mask(jax.random.key(1), 16, 25, 0.5))
  np.testing.assert_array_equal(tiles.random_tile_mask(jax.random.key(0), 4, 10, 0.3).sum(1), 3)
  assert not tiles.random_tile_mask(jax.random.key(0), 2, 10, 0.0).any()


def test_apply_tile_mask_fills_only_masked_tiles():
  grid = tiles.TileGrid(16, 12, 3)
  ids = grid.tile_ids()
  image = jnp.asarray(_images(0, (2, 16, 12, 3)))
  tm = tiles.random_tile_mask(jax.random.key(3), 2, grid.num_tiles)
  fill = np.array([0.1, 0.2, 0.3], np.float32)
  out = np.asarray(tiles.apply_tile_mask(image, tm, ids, fill))
  pm = np.asarray(tiles.pixel_mask(tm, ids))
  tm_np = np.asarray(tm)
  for b in range(2):
    for i in range(16):
      for j in range(12):
        assert pm[b, i, j] == tm_np[b, ids[i, j]]
        want = fill if tm_np[b, ids[i, j]] else np.asarray(image)[b, i, j]
        np.testing.assert_array_equal(out[b, i, j], want)


def test_per_tile_scores_match_brute_force():
  grid = tiles.TileGrid(14, 11, 3)  # remainders on both axes
  target = _images(1, (2, 14, 11, 3))
  pred = np.clip(target + np.random.default_rng(2).normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
  got = tiles.per_tile_scores(jnp.asarray(pred), jnp.asarray(target), grid.tile_ids(), grid.num_tiles)
  np.testing.assert_allclose(np.asarray(got), _np_tile_scores(pred, target, grid), atol=1e-5)
  same = tiles.per_tile_scores(jnp.asarray(target), jnp.asarray(target), grid.tile_ids(), grid.num_tiles)
  np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-6)


def test_tile_scope_scores_are_the_ssim_of_each_tile_crop():
  """scope "tile" (the authors' scoring): per tile, L1 over the crop + 1 - SSIM of the crop with 'valid' windows."""
  from maskseg_jax.losses.reconstruction import ssim
  grid = tiles.TileGrid(17, 13, 3)  # tiles of 5/5/7 x 4/4/5 px
  target = _images(3, (2, 17, 13, 3))
  pred = np.clip(target + np.random.default_rng(4).normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
  rb, cb = grid.row_bounds, grid.col_bounds
  for window, gaussian in (("gaussian", True), ("uniform", False)):
    got = np.asarray(tiles.per_tile_scores(jnp.asarray(pred), jnp.asarray(target), grid.tile_ids(), grid.num_tiles,
                                           ssim_tile_ids=tiles.ssim_scope_ids(grid, "tile"),
                                           gaussian=tiles.ssim_window_is_gaussian(window)))
    want = np.zeros_like(got)
    for r in range(3):
      for q in range(3):
        crop = lambda a: jnp.asarray(a[:, rb[r]:rb[r + 1], cb[q]:cb[q + 1]])
        want[:, r * 3 + q] = (np.abs(pred - target)[:, rb[r]:rb[r + 1], cb[q]:cb[q + 1]].mean((1, 2, 3)) + 1.0
                              - np.asarray(ssim(crop(pred), crop(target), window=3, gaussian=gaussian)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=window)
  # the "image" scope differs: its edge pixels' windows reach into the neighbouring tiles
  image = np.asarray(tiles.per_tile_scores(jnp.asarray(pred), jnp.asarray(target), grid.tile_ids(), grid.num_tiles))
  assert np.abs(image - got).max() > 1e-3


def test_interior_tile_ids_and_bad_scoring_choices():
  grid = tiles.TileGrid(12, 12, 3)  # 4 px tiles: the interior is the middle 2 x 2 of each
  ids = grid.interior_tile_ids(1)
  assert (np.bincount(ids.ravel(), minlength=10)[:9] == 4).all() and (ids == 9).sum() == 144 - 36
  assert ids[1, 1] == 0 and ids[0, 1] == 9 and ids[5, 9] == 5 and ids[3, 3] == 9
  with pytest.raises(ConfigError, match="tiles of 2 px have no pixel 1 px inside"):
    tiles.TileGrid(8, 8, 4).interior_tile_ids(1)
  with pytest.raises(ConfigError, match="selective.score_scope='crop'; expected one of"):
    tiles.make_selective_scorer(lambda s, x: x, grid, fill_color=0.0, ssim_scope="crop")
  with pytest.raises(ConfigError, match="selective.score_window='box'; expected one of"):
    tiles.make_selective_scorer(lambda s, x: x, grid, fill_color=0.0, ssim_window="box")


GRID = tiles.TileGrid(16, 16, 4)  # 4x4 px tiles, T = 16, K = 8
FILL = np.array([0.5, 0.5, 0.5], np.float32)


def test_selective_scorer_picks_corrupted_tiles():
  """A fake model whose reconstruction is wrong on known tiles: those tiles must be selected."""
  images = _images(4, (2, 16, 16, 3))
  corrupted = np.zeros((2, 16), bool)
  corrupted[0, [0, 3, 5, 6, 9, 10, 12, 15]] = True
  corrupted[1, :8] = True
  pm = np.asarray(tiles.pixel_mask(jnp.asarray(corrupted), GRID.tile_ids()))
  recon = np.where(pm[..., None], 1.0 - images, images).astype(np.float32)
  # "Reconstructs" the same wrong image whatever the mask; one draw so its batch matches the input's.
  apply_fn = lambda state, masked: state
  want_scores = _np_tile_scores(recon, images, GRID)
  for sequential in (False, True):
    score = jax.jit(tiles.make_selective_scorer(apply_fn, GRID, num_draws=1, fill_color=FILL,
                                                sequential_draws=sequential))
    mask, mean_scores = score(jnp.asarray(recon), jnp.asarray(images), jax.random.key(0))
    np.testing.assert_array_equal(mask, corrupted)
    np.testing.assert_allclose(mean_scores, want_scores, atol=1e-5)


def test_selective_scorer_averages_draws_and_is_deterministic():
  """Identity "model": the score depends on each draw's mask, so the average over draws is checked."""
  images = jnp.asarray(_images(5, (3, 16, 16, 3)))
  apply_fn = lambda state, masked: masked * state
  score = jax.jit(tiles.make_selective_scorer(apply_fn, GRID, num_draws=4, fill_color=FILL))
  rng = jax.random.key(7)
  mask, mean_scores = score(1.0, images, rng)
  # The draws the scorer uses: B * num_draws masks from `rng`, image-major.
  draws = np.asarray(tiles.random_tile_mask(rng, 3 * 4, 16)).reshape(3, 4, 16).swapaxes(0, 1)
  want = np.mean([_np_tile_scores(np.asarray(tiles.apply_tile_mask(images, d, GRID.tile_ids(), FILL)),
                                  np.asarray(images), GRID) for d in draws], axis=0)
  np.testing.assert_allclose(mean_scores, want, atol=1e-5)
  np.testing.assert_array_equal(mask.sum(1), 8)
  # Selected tiles are exactly the 8 highest average scores.
  ms, mk = np.asarray(mean_scores), np.asarray(mask)
  for b in range(3):
    assert ms[b][mk[b]].min() >= ms[b][~mk[b]].max()
  mask2, scores2 = score(1.0, images, rng)
  np.testing.assert_array_equal(mask, mask2)
  np.testing.assert_array_equal(mean_scores, scores2)
  _, scores3 = score(1.0, images, jax.random.key(8))
  assert not np.allclose(mean_scores, scores3)
  # Scoring in another space: images fed at half scale and mapped back by `to_score_space` score the same.
  half = jax.jit(tiles.make_selective_scorer(apply_fn, GRID, num_draws=4, fill_color=FILL / 2,
                                             to_score_space=lambda x: 2.0 * x))
  np.testing.assert_allclose(half(1.0, images / 2, rng)[1], mean_scores, atol=1e-6)
  # Sequential draws (lax.map) give the same answer.
  seq = jax.jit(tiles.make_selective_scorer(apply_fn, GRID, num_draws=4, fill_color=FILL, sequential_draws=True))
  np.testing.assert_allclose(seq(1.0, images, rng)[1], mean_scores, atol=1e-6)


class _TinyNet(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 3, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(3, rngs=rngs)

  def __call__(self, x, *, train):
    return self.bn(self.conv(x), use_running_average=not train)


@pytest.mark.parametrize("axis_type,sequential", [(AxisType.Explicit, False), (AxisType.Explicit, True),
                                                  (AxisType.Auto, False)])
def test_selective_scorer_batch_sharded_nnx_model(axis_type, sequential):
  """A real (tiny) NNX model merged inside apply_fn, images sharded over 8 devices: same masks as unsharded."""
  graphdef, state = nnx.split(_TinyNet(nnx.Rngs(0)))
  apply_fn = lambda st, x: nnx.merge(graphdef, st)(x, train=False)
  score = jax.jit(tiles.make_selective_scorer(apply_fn, GRID, num_draws=2, fill_color=FILL,
                                              sequential_draws=sequential))
  images = jnp.asarray(_images(6, (8, 16, 16, 3)))
  rng = jax.random.key(1)
  ref_mask, ref_scores = score(state, images, rng)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
  with jax.set_mesh(mesh):
    sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
    mask, scores = score(state, sharded, rng)
  assert mask.sharding.spec[0] == "data"
  np.testing.assert_array_equal(mask, ref_mask)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


def test_mask_file_round_trip(tmp_path):
  grid = tiles.TileGrid(64, 64, 5)
  rng = np.random.default_rng(0)
  masks = {f"img_{i:03d}": rng.uniform(size=25) < 0.5 for i in range(7)}
  masks["a/b c"] = np.zeros(25, bool)
  path = tmp_path / "stage1" / "masks.npz"
  tiles.save_tile_masks(path, masks, grid)
  loaded, g = tiles.load_tile_masks(path, expected_grid=grid)
  assert g == grid and set(loaded) == set(masks)
  for k, v in masks.items():
    assert loaded[k].dtype == np.bool_
    np.testing.assert_array_equal(loaded[k], v)
  assert [p.name for p in path.parent.iterdir()] == ["masks.npz"]  # no temp files left behind
  empty = tmp_path / "empty.npz"
  tiles.save_tile_masks(empty, {}, grid)
  assert tiles.load_tile_masks(empty)[0] == {}


def test_mask_file_errors(tmp_path):
  grid = tiles.TileGrid(32, 32, 4)
  with pytest.raises(ValueError, match="img1"):
    tiles.save_tile_masks(tmp_path / "x.npz", {"img1": np.zeros(15, bool)}, grid)
  missing = tmp_path / "missing.npz"
  with pytest.raises(DataError, match="missing.npz"):
    tiles.load_tile_masks(missing)
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"not a zip file at all")
  with pytest.raises(DataError, match="corrupt.npz"):
    tiles.load_tile_masks(corrupt)
  other = tmp_path / "other.npz"
  np.savez(other, something=np.zeros(3))
  with pytest.raises(DataError, match="other.npz.*not a tile mask file"):
    tiles.load_tile_masks(other)
  good = tmp_path / "good.npz"
  tiles.save_tile_masks(good, {"a": np.ones(16, bool)}, grid)
  with pytest.raises(DataError, match="good.npz.*expected"):
    tiles.load_tile_masks(good, expected_grid=tiles.TileGrid(32, 32, 2))
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good.read_bytes()[:-40])
  with pytest.raises(DataError, match="truncated.npz"):
    tiles.load_tile_masks(truncated)
