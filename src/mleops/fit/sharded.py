"""Data-parallel fits: rows spread over every visible device with ``jax.sharding``, and the
start-up of a multi-process job.

The jitted fit is unchanged: XLA partitions the per-row work and inserts the cross-device
reductions, so a sharded fit gives the single-device answer (up to summation order).
``pad_rows`` is the one padding rule every fixed-shape path uses (shards, minibatch chunks,
ragged batches, the server's size buckets): copies of row 0 carry weight 0 or are sliced off,
so padding never changes a likelihood.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mleops.fit.data import Data, with_weights


def pad_rows(a, total: int, *, zero: bool = False):
    """``a`` extended along axis 0 to ``total`` rows: copies of row 0, or zeros (weights)."""
    if a is None:
        return None
    xp = jnp if isinstance(a, jax.Array) else np
    pad = total - a.shape[0]
    if pad <= 0:
        return a
    fill = (xp.zeros((pad,) + a.shape[1:], a.dtype) if zero
            else xp.broadcast_to(a[:1], (pad,) + a.shape[1:]))
    return xp.concatenate([a, fill])


def initialize_distributed(env: dict[str, str] | None = None) -> int:
    """Join a multi-process job (Training Operator JAXJob env), a no-op outside one; returns
    this process' rank."""
    env = os.environ if env is None else env
    if "NUM_PROCESSES" not in env:
        return 0
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # GPUs use NCCL anyway
    jax.distributed.initialize(f"{env['COORDINATOR_ADDRESS']}:{env['COORDINATOR_PORT']}",
                               num_processes=int(env["NUM_PROCESSES"]),
                               process_id=int(env["PROCESS_ID"]))
    return jax.process_index()


def data_mesh(devices=None) -> Mesh:
    devs = np.array(jax.devices() if devices is None else devices)
    return Mesh(devs, ("data",))


def shard_data(d: Data, devices=None) -> Data:
    """Pad rows to a multiple of the device count (weight-0 copies of row 0) and shard them."""
    d = with_weights(d)
    mesh = data_mesh(devices)
    k = mesh.devices.size
    n = d.x.shape[0]
    total = n + (-n) % k

    def place(a, is_weight=False):
        if a is None:
            return None
        a = pad_rows(a, total, zero=is_weight)
        spec = P("data", *([None] * (a.ndim - 1)))
        return jax.device_put(a, NamedSharding(mesh, spec))

    return Data(place(d.x), place(d.w, True), place(d.X), place(d.kind), place(d.upper),
                place(d.trunc_lo), place(d.trunc_hi))
