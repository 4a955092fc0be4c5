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
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mleops.errors import DataError
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


#: the names each launcher gives a process: (coordinator host[:port], port, count, rank)
V1_ENV = ("COORDINATOR_ADDRESS", "COORDINATOR_PORT", "NUM_PROCESSES", "PROCESS_ID")  # JAXJob
V2_ENV = ("JAX_COORDINATOR_ADDRESS", None, "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")  # Trainer v2
TRAINER_PORT = 29500  # Kubeflow Trainer's ContainerTrainerPort, for an address without a port


def _int(env: Mapping[str, str], name: str, low: int, high: int | None = None) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise DataError(f"${name}={raw!r} must be an integer in {low}..{'' if high is None else high}")
    return value


def _address(env: Mapping[str, str], names: tuple) -> str:
    """``host:port`` from the launcher's address (which may carry the port) and port names."""
    addr_name, port_name = names[0], names[1]
    addr = env[addr_name].strip()
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):  # host:port, [v6]:port
        if port_name is None:
            _int({addr_name: port}, addr_name, 1, 65535)
            return addr
        addr = host  # the port variable wins over a port in the address
    if not addr or " " in addr:
        raise DataError(f"${addr_name}={env[addr_name]!r} is not a host name or address")
    port_value = _int(env, port_name, 1, 65535) if port_name else TRAINER_PORT
    return f"{addr}:{port_value}"


def _launcher_args(env: Mapping[str, str]) -> dict | None:
    """``jax.distributed.initialize`` keywords from a Trainer v2 or JAXJob environment, {} to
    let jax detect its cluster itself, None outside any multi-process job."""
    for names in (V2_ENV, V1_ENV):
        wanted = [n for n in names if n is not None]
        present = [n for n in wanted if env.get(n, "") != ""]
        if not present:
            continue
        if missing := [n for n in wanted if n not in present]:
            raise DataError(f"distributed start-up: {', '.join('$' + n for n in present)} set "
                            f"but {', '.join('$' + n for n in missing)} missing")
        count = _int(env, names[2], 1)
        return {"coordinator_address": _address(env, names), "num_processes": count,
                "process_id": _int(env, names[3], 0, count - 1)}
    return {} if detected_cluster(env) else None


def detected_cluster(env: Mapping[str, str]) -> str | None:
    """The cluster ``jax.distributed.initialize()`` would configure itself from (SLURM, Open MPI,
    Cloud TPU, a Kubernetes indexed Job), or None. jax keeps its detectors private, so any
    change there reads as "no cluster"; a lone Kubernetes pod is not a job."""
    try:
        from jax._src.clusters import ClusterEnv

        kinds = [c for c in ClusterEnv._cluster_types if not c.opt_in_only_method]
        if "JOB_COMPLETION_INDEX" not in env:
            kinds = [c for c in kinds if c.__name__ != "K8sCluster"]
        return next((c.__name__ for c in kinds if c.is_env_present()), None)
    except Exception:  # noqa: BLE001 - a detector failing means it cannot configure jax either
        return None


def initialize_distributed(env: Mapping[str, str] | None = None) -> int:
    """Join a multi-process job, a no-op outside one; returns this process' rank.

    Reads Kubeflow Trainer v2's ``JAX_COORDINATOR_ADDRESS`` (``host:port``) /
    ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, else the Training Operator JAXJob's
    ``COORDINATOR_ADDRESS`` / ``COORDINATOR_PORT`` / ``NUM_PROCESSES`` / ``PROCESS_ID``; with
    neither, lets jax configure itself on a cluster it detects (:func:`detected_cluster`).
    A half-set or invalid environment is a DataError naming the variable.
    """
    args = _launcher_args(os.environ if env is None else env)
    if args is None:
        return 0
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # GPUs use NCCL anyway
    jax.distributed.initialize(**args)
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
