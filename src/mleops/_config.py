"""Process-wide JAX settings, applied once on import of :mod:`mleops`.

float64 everywhere (likelihood sums over 1e6 rows lose digits in float32), and JAX's
persistent compilation cache so a fresh process (CLI, pipeline component) reuses compiled
fit kernels instead of paying the compile again.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from types import ModuleType


def _import_jax() -> ModuleType:
    """``import jax`` without its scan of every installed distribution's metadata for a ROCm
    plugin (jax-ml/jax#37879, in jax 0.10): 30-70 ms of a 0.7 s ``mleops fit`` in this
    project's environment of 184 distributions, more in bigger ones. While jax imports, the
    scan sees only distributions whose name (taken from the dist-info directory's, so free)
    starts with ``jax``: any ``jax-rocm*-plugin`` among them, so what jax finds is the same."""
    if "jax" in sys.modules:
        return sys.modules["jax"]
    md = importlib.metadata
    every = md.distributions

    def maybe_jax(dist) -> bool:
        name = getattr(dist, "_normalized_name", None)
        return not isinstance(name, str) or name.startswith("jax")

    def distributions(**kwargs):
        found = every(**kwargs)
        return found if kwargs else (d for d in found if maybe_jax(d))

    md.distributions = distributions
    try:
        import jax
    finally:
        md.distributions = every
    return jax


jax = _import_jax()
jax.config.update("jax_enable_x64", True)

#: the gate's one default tolerance (library, CLI, pipeline, README): nats/row a candidate may
#: lose against the champion on held-out rows. Here, not in mleops.gate, so that parsing the
#: CLI's options does not import scipy.
GATE_TOLERANCE = 0.002
#: what the gate may do with an inconclusive likelihood comparison (the first is the default)
INCONCLUSIVE_POLICIES = ("register", "reject")

_CACHE_DEFAULT = os.path.join(os.path.expanduser("~"), ".cache", "mleops", "jax")


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent cache (``MLEOPS_JAX_CACHE=off`` disables it)."""
    path = path or os.environ.get("MLEOPS_JAX_CACHE", _CACHE_DEFAULT)
    if path == "off":
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
