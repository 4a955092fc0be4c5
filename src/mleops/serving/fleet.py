"""Serving a fleet (thousands of keyed models of one family, one artifact) as ONE model.

A staged fleet directory holds ``fleet.json`` + ``fleet.parquet`` (and ``serving.json`` with
the registered name and version); :class:`~mleops.serving.service.LikelihoodService` detects
it on load and answers requests whose rows each carry their key (one string per key column):

* ``loglik``: one :meth:`FleetArtifact.loglik_rows` call for all rows, whatever the number of
  keys they mix (one vmapped gather, the kernel the fit used);
* ``cdf`` / ``sf`` / ``quantiles``: per row under its key's parameters, one vmapped
  ``family.cdf`` / ``family.ppf`` kernel (``sf`` is ``1 - cdf``, as for one model);
* an unknown key, a key with no usable estimate, an empty or missing key, or key columns of
  another length than ``x``: a 4xx naming it (unless the fleet answers unknown keys with its
  pooled fit), counted as rejected like any refused request.

The totals (rows, log-likelihood sums) and the metric labels are those of one model: per
fleet version, never per key, so the metrics' cardinality stays bounded.
"""

from __future__ import annotations

import numpy as np

from mleops.fleet_kernel import keyed_cdf, keyed_ppf
from mleops.serving.contract import ContractError


def key_columns(keys, key_names: list[str], n: int, max_rows: int) -> list[np.ndarray]:
    """One array of key values per key column, ``n`` rows each (strings are matched by the
    artifact, which also refuses missing and empty keys)."""
    if keys is None:
        raise ContractError(f"this model is a fleet keyed by {key_names}: every row needs its "
                           f"key (send {key_names} with the rows)")
    if isinstance(keys, dict):
        if missing := [k for k in key_names if k not in keys]:
            raise ContractError(f"request lacks key column(s) {missing}; this fleet is keyed "
                               f"by {key_names}")
        keys = [keys[k] for k in key_names]
    keys = list(keys)
    if len(keys) != len(key_names):
        raise ContractError(f"this fleet is keyed by {key_names}: got {len(keys)} key "
                           f"column(s)")
    out = []
    for name, k in zip(key_names, keys):
        a = np.asarray(k, dtype=object)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1:
            raise ContractError(f"key column {name!r} must be one value per row, got shape "
                               f"{a.shape}")
        if a.shape[0] > max_rows:
            raise ContractError(f"key column {name!r} has {a.shape[0]} rows; the limit is "
                               f"{max_rows}", status=413)
        if a.shape[0] != n:
            raise ContractError(f"key column {name!r} has {a.shape[0]} row(s) but x has {n}")
        out.append(a)
    return out


def evaluate_rows(svc, cols: dict, keys, output: str, qs, record: bool
                  ) -> tuple[np.ndarray, list[str]]:
    """What :meth:`LikelihoodService.evaluate` answers for a fleet (validated ``cols``);
    refusals are ContractError / DataError, which ``evaluate`` answers as 4xx."""
    art, x = svc.fleet, cols["x"]
    keys = key_columns(keys, art.key_names, len(x), svc.max_rows)
    if output == "quantiles":
        out = keyed_ppf(art.family, art.row_params(art.rows_of(keys)), qs)
        return svc._finite(out, x), [f"q{q:g}" for q in qs]
    svc._check_support(x)
    if output == "loglik":
        ll = svc._finite(art.loglik_rows(x, keys, event=cols.get("event")), x)
        if record:
            svc._record(ll)
        return ll, ["loglik"]
    p = svc._finite(keyed_cdf(art.family, art.row_params(art.rows_of(keys)), x), x)
    return (p if output == "cdf" else 1.0 - p), [output]


def load_canary(svc, version: str) -> None:
    """The candidate table (registered ``version``) a fleet canary serves beside the
    champion's, its routing file and its per-key tally."""
    import os

    from mleops.fleet_artifact import FleetArtifact
    from mleops.serving.fleet_canary import RoutingFile, check_pair
    from mleops.serving.fleet_tally import KeyTally

    svc.canary = check_pair(svc.fleet, FleetArtifact.load(svc.canary_dir))
    svc.canary_version = version
    svc.routing = RoutingFile(svc.routing_path or os.path.join(svc.canary_dir, "routing.json"))
    svc.tally = KeyTally(len(svc.canary), svc.canary_version)


def canary_rows(svc, cols: dict, keys, request_id: str):
    """A fleet canary's answer to a log-likelihood request (validated ``cols``): each row
    under its arm's table; the champion's totals count what the champion answered, the
    candidate's what it answered (shadow: what it scored), and the per-key tally
    (:mod:`.fleet_tally`) each key's evidence."""
    from mleops.serving.fleet_canary import ARM_CANARY, score

    x = cols["x"]
    keys = key_columns(keys, svc.fleet.key_names, len(x), svc.max_rows)
    svc._check_support(x)
    routing = svc.routing.current()
    out = score(svc.fleet, svc.canary, x, keys, request_id=request_id, routing=routing,
                event=cols.get("event"))
    out.loglik = svc._finite(out.loglik, x)
    if out.loglik_canary is not None:
        out.loglik_canary = svc._finite(out.loglik_canary, x)
    svc._record(out.loglik[~out.by_candidate])
    scored = (out.loglik_canary[out.arm == ARM_CANARY] if out.loglik_canary is not None
              else out.loglik[out.by_candidate])
    if scored.size:
        svc._record(scored, canary=True)
    svc.tally.add(out.arm, out.key_index, out.loglik, out.loglik_canary)
    return out


def warm(svc) -> None:
    """Compile the loglik kernel once on load (the first request is then not the slow one).

    The value scored is a point of the support (``Family.support_point``): the family's ppf
    would compile a second, much larger program (for gamma, the inverse incomplete gamma:
    about 120 MB of resident memory) that a server answering ``loglik`` never needs."""
    from mleops.errors import DataError
    from mleops.families import get_family

    art = svc.fleet
    ok = np.flatnonzero(art.servable)
    if ok.size == 0 and art.unknown_key != "pooled":
        return  # nothing this fleet can answer; every request will be refused by key
    keys = [np.array([k[ok[0]] if ok.size else "\x00warm"], dtype=object) for k in art.keys]
    x = np.array([[get_family(art.family).support_point()]])
    try:
        svc.evaluate(x, None, "loglik", keys=keys, record=False)
    except DataError:  # outside this family's support after all: its median, then
        at = np.array([ok[0] if ok.size else -1])
        mid = keyed_ppf(art.family, art.row_params(at), [0.5])[:, 0]
        if np.isfinite(mid).all():
            svc.evaluate(mid[:, None], None, "loglik", keys=keys, record=False)


__all__ = ["canary_rows", "evaluate_rows", "key_columns", "load_canary", "warm"]
