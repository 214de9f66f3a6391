"""Device mesh and the two shardings every step uses: batch split over `data`, state replicated.

Multi-host: each process feeds its own slice of the global batch; `to_global` assembles a global
`jax.Array` with `jax.make_array_from_process_local_data`, so train steps see the global batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process (or the first `num_devices`), axis `data`.

  Auto axis types: the compiler propagates shardings (GSPMD), so model code needs no sharding annotations;
  jax 0.10 defaults to Explicit axes, under which reductions like a confusion-matrix scatter must be annotated.
  """
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(batch: dict, mesh) -> dict:
  """Host-local numpy batch -> global arrays sharded over the batch axis (strings and ids stay on host)."""
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind in "US" or value.dtype == object:
      continue
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def replicate(tree, mesh):
  """Places a host pytree on every device (identical on all processes)."""
  return jax.device_put(tree, replicated(mesh))


def check_batch_size(batch_size: int, what: str = "data.batch_size") -> None:
  """A global batch must split evenly over devices and processes."""
  from maskseg_jax.errors import ConfigError
  n = jax.device_count()
  if batch_size % n:
    raise ConfigError(f"{what}={batch_size} must be divisible by the number of devices ({n}); "
                      f"use a multiple of {n}.")
