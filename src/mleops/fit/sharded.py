"""Data-parallel fits: rows spread over every visible device with ``jax.sharding``.

The jitted fit is unchanged: XLA partitions the per-row work and inserts the cross-device
reductions, so a sharded fit gives the single-device answer (up to summation order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..data import Data, with_weights


def data_mesh(devices=None) -> Mesh:
    devs = np.array(jax.devices() if devices is None else devices)
    return Mesh(devs, ("data",))


def shard_data(d: Data, devices=None) -> Data:
    """Pad rows to a multiple of the device count (weight-0 copies of row 0) and shard them."""
    d = with_weights(d)
    mesh = data_mesh(devices)
    k = mesh.devices.size
    n = d.x.shape[0]
    pad = (-n) % k

    def place(a, is_weight=False):
        if a is None:
            return None
        if pad:
            fill = jnp.zeros((pad,) + a.shape[1:], a.dtype) if is_weight else \
                jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])
            a = jnp.concatenate([a, fill])
        spec = P("data", *([None] * (a.ndim - 1)))
        return jax.device_put(a, NamedSharding(mesh, spec))

    return Data(place(d.x), place(d.w, True), place(d.X), place(d.kind), place(d.upper),
                place(d.trunc_lo), place(d.trunc_hi))
