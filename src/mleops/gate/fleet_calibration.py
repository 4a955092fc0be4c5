"""Calibration of every key of a fleet on its held-out rows, in one pass.

The single-model gate's calibration (PIT: KS distance and central coverage, randomized for
counts and censored rows) per key, with the PIT of all rows computed by one keyed CDF kernel
(each row under its key's parameters) and summarised key by key. What ``decide_fleet``
takes as ``calib``.
"""

from __future__ import annotations

import numpy as np

from mleops.errors import DataError
from mleops.fit.data import make_data
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.fleet_kernel import keyed_cdf
from mleops.gate.calibration import CALIBRATION_KEYS, pit_summary, randomized_pit


class _Keyed:
    """The part of an artifact ``randomized_pit`` uses (``cdf``), row-wise by key."""

    def __init__(self, fleet: FleetArtifact, params: np.ndarray):
        self.fleet, self.params = fleet, params

    def cdf(self, x, X=None) -> np.ndarray:
        return keyed_cdf(self.fleet.family, self.params, x)


def fleet_calibration(fleet: FleetArtifact, x, keys: list, *, event=None,
                      seed: int = 0) -> dict[str, dict]:
    """key label ("/"-joined for composite keys) -> calibration dict of that key's rows."""
    from mleops.families import get_family

    fam = get_family(fleet.family)
    if fam.outcome == "binary":
        raise DataError("fleet calibration of logistic fleets is not supported yet")
    d = make_data(fam, x, event=event)
    at = fleet.rows_of(keys)
    arr = lambda a: None if a is None else np.asarray(a)  # noqa: E731
    u = randomized_pit(_Keyed(fleet, fleet.row_params(at)), np.asarray(d.x), None,
                       arr(d.kind), arr(d.upper), seed, discrete=(fam.outcome == "count"))
    u = np.clip(np.asarray(u, np.float64), 0.0, 1.0)
    labels = key_labels(keys)
    out = {}
    order = np.argsort(labels, kind="stable")
    uniq, starts = np.unique(labels[order], return_index=True)
    for key, part in zip(uniq.tolist(), np.split(u[order], starts[1:])):
        c = dict.fromkeys(CALIBRATION_KEYS)
        c.update(kind=fam.outcome, family=fam.name, n=int(part.size), n_used=int(part.size))
        c.update(pit_summary(part))
        out[key] = c
    return out


__all__ = ["fleet_calibration"]
