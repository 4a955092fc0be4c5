"""What a model server does with a request, independent of the serving framework.

Validates the payload (shape, dtype, finiteness, support, size), evaluates the model with the
same kernels the fit used, and keeps the running totals the Prometheus metrics export
(rows, requests, sum of per-row log-likelihood, rows outside the support), so a dashboard or
a canary controller can compute the live average log-likelihood per model version.

A directory holding a fleet (``fleet.json`` + ``fleet.parquet``: thousands of keyed models of
one family) is served the same way as ONE model: each request row carries its key, and
:mod:`mleops.serving.fleet` evaluates the rows of all keys in one kernel call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass

import numpy as np

from mleops import failpoints
from mleops.artifact import FILENAME, ModelArtifact
from mleops.errors import DataError, MleopsError
from mleops.families import Family, get_family
from mleops.fleet_artifact import HEADER as FLEET_HEADER
from mleops.fleet_artifact import TABLE as FLEET_TABLE
from mleops.serving.contract import OUTPUTS, ContractError, Limits, options

TINY = float(np.finfo(np.float64).tiny)  # below it (subnormals) XLA on CPU flushes to zero
SERVING_INFO = "serving.json"  # name/version written next to model.json when staged
# What every protocol's server exports (Prometheus adds _total to counters), from Totals.
COUNTERS = {"mleops_requests": "requests", "mleops_rows": "rows",
            "mleops_rows_outside_support": "outside_support",
            "mleops_rejected_requests": "rejected", "mleops_failed_requests": "failed"}
GAUGES = {"mleops_loglik_sum": "loglik_sum", "mleops_loglik_sq_sum": "loglik_sq_sum"}
METRIC_LABELS = ("registered_model", "registered_version")


CANARY_VERSION_ENV = "MLEOPS_CANARY_VERSION"  # a fleet canary's version, unstaged


class ServingError(MleopsError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Totals:
    requests: int = 0
    rows: int = 0
    loglik_sum: float = 0.0
    outside_support: int = 0
    rejected: int = 0
    loglik_sq_sum: float = 0.0  # with rows and loglik_sum: the live variance, for tests
    failed: int = 0  # requests the server could not answer (its own error: a 5xx)


class LikelihoodService:
    """One loaded model version and its running totals (thread-safe)."""

    def __init__(self, model_dir: str, *, max_rows: int | None = None, model_name: str = "",
                 model_version: str = "", limits: Limits | None = None,
                 canary_dir: str = "", routing_path: str = ""):
        """``canary_dir``: a fleet canary, the candidate version's table served beside this
        fleet's and routed per key by the file at ``routing_path`` (:mod:`.fleet_canary`)."""
        self.model_dir, self.canary_dir, self.routing_path = model_dir, canary_dir, routing_path
        self.limits = limits or Limits.from_env(**({"max_rows": max_rows} if max_rows else {}))
        self.max_rows = self.limits.max_rows
        self.model_name, self.model_version = model_name, model_version
        self.artifact: ModelArtifact | None = None
        self.fleet = None  # a FleetArtifact when the directory holds a fleet
        self.totals = Totals()
        self.canary = None  # a fleet canary's candidate table (a FleetArtifact)
        self.canary_version, self.canary_totals, self.routing = "", Totals(), None
        self.tally = None  # a fleet canary's per-key evidence (a fleet_tally.KeyTally)
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------
    def load(self) -> None:
        """Read model.json, or fleet.json + fleet.parquet (never pickle), and warm the
        compiled kernels."""
        if os.path.exists(os.path.join(self.model_dir, FLEET_HEADER)):
            from mleops.fleet_artifact import FleetArtifact

            self.fleet = FleetArtifact.load(self.model_dir)
        else:
            self.artifact = ModelArtifact.load(self.model_dir)
        if info := read_serving_info(self.model_dir):
            self.model_name = self.model_name or info.get("name", "")
            self.model_version = self.model_version or str(info.get("version", ""))
        # a bare model directory is named after itself (what an OIP client addresses)
        self.model_name = (self.model_name or os.path.basename(os.path.normpath(self.model_dir))
                           or self.fam.name)
        self.model_version = self.model_version or "local"
        if self.fleet is not None:
            from mleops.serving import fleet

            if self.canary_dir:
                # a staged table names its version; on a cluster the manifest's env does
                fleet.load_canary(self, str(read_serving_info(self.canary_dir).get(
                    "version", "")) or os.environ.get(CANARY_VERSION_ENV, "") or "canary")
            fleet.warm(self)
            return
        if self.canary_dir:
            raise DataError("a canary table is served beside a fleet only; this model is one")
        # a point of the support, not the median: see Family.support_point
        x0 = 0.0 if self.covariates else self.fam.support_point()
        try:
            self.evaluate(np.full((1, 1 + len(self.covariates)), x0), None, "loglik",
                          record=False)
        except DataError:  # outside this model's support after all: its median, then
            warm = np.full((1, 1 + len(self.covariates)), self._inside_value())
            self.evaluate(warm, None, "loglik", record=False)

    @property
    def ready(self) -> bool:
        return self.artifact is not None or self.fleet is not None

    @property
    def fam(self) -> Family:
        return self.artifact.fam if self.artifact is not None else get_family(self.fleet.family)

    @property
    def key_names(self) -> list[str]:
        """The key columns every request row carries (a fleet's); [] for one model."""
        return list(self.fleet.key_names) if self.fleet is not None else []

    @property
    def covariates(self) -> list[str]:
        return [f for f in (self.artifact.features if self.artifact else []) if f != "const"]

    def _inside_value(self) -> float:
        return float(self.artifact.ppf(np.array([0.5]))[0]) if not self.covariates else 0.0

    # --- requests ------------------------------------------------------------------------
    def columns(self, X, names: list[str] | None) -> dict[str, np.ndarray]:
        """Validated columns ``x`` [``event``] [covariates] from an ndarray/tensor payload."""
        try:
            a = np.asarray(X)
        except Exception:  # ragged nested lists
            raise ServingError("payload is not a rectangular array") from None
        if a.dtype == object or a.dtype.kind not in "iuf":
            what = "boolean" if a.dtype.kind == "b" else str(a.dtype)
            raise ServingError(f"payload must be numeric, got {what} values")
        a = a.astype(np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ServingError(f"payload must be 1-D or 2-D, got shape {a.shape}")
        if a.shape[0] == 0:
            raise ServingError("payload has no rows")
        if a.shape[0] > self.max_rows:
            raise ServingError(f"payload has {a.shape[0]} rows; the limit is {self.max_rows}",
                               status=413)
        bad = ~np.isfinite(a)
        if bad.any():
            r, c = map(int, np.argwhere(bad)[0])
            raise ServingError(f"payload has {int(bad.sum())} non-finite value(s) (NaN/inf); "
                               f"first at row {r}, column {c}")
        sub = (a != 0) & (np.abs(a) < TINY)
        if sub.any():
            r, c = map(int, np.argwhere(sub)[0])
            raise ServingError(f"payload has {int(sub.sum())} subnormal value(s) (0 < |v| < "
                               f"{TINY:.4g}, not computed exactly); first at row {r}, "
                               f"column {c}: {float(a[r, c])!r}")
        if a.shape[1] > self.limits.max_columns:
            raise ServingError(f"payload has {a.shape[1]} columns; the limit is "
                               f"{self.limits.max_columns}", status=413)
        expected = ["x", *self.covariates]
        if names:
            names = list(names)
            if len(names) != a.shape[1]:
                raise ServingError(f"{len(names)} names for {a.shape[1]} columns")
            missing = [n for n in expected if n not in names]
            if missing:
                raise ServingError(f"payload lacks column(s) {missing}; expected {expected} "
                                   "(+ optional 'event')")
            cols = {n: a[:, names.index(n)] for n in names if n in expected + ["event"]}
        else:
            if a.shape[1] != len(expected):
                raise ServingError(f"payload has {a.shape[1]} column(s); expected "
                                   f"{len(expected)}: {expected} (or send 'names')")
            cols = dict(zip(expected, a.T))
        return cols

    def evaluate(self, X, names, output: str = "loglik", quantiles=None, *,
                 keys=None, record: bool = True) -> tuple[np.ndarray, list[str]]:
        """Output rows for a payload; raises ServingError (4xx) on any bad input.

        ``keys``: for a fleet, each row's key (one array per key column, or a dict by key
        column name); a fleet refuses a payload without them, one model one with them."""
        return self._guarded(record, self._evaluate, X, names, output, quantiles, record, keys)

    def evaluate_canary(self, X, names, keys, request_id: str):
        """A fleet canary's log-likelihood answer (:class:`.fleet_canary.CanaryAnswer`) for
        the request ``request_id`` (its routing hashes it); ServingError on bad input."""
        from mleops.serving import fleet

        return self._guarded(True, lambda: fleet.canary_rows(self, self.columns(X, names),
                                                             keys, request_id))

    def _guarded(self, record: bool, fn, *args):
        """``fn(*args)`` with every refusal a ServingError (4xx), counted if ``record``."""
        if not self.ready:
            raise ServingError("model not loaded yet", status=503)
        try:
            return fn(*args)
        except (DataError, ContractError) as e:
            err = ServingError(str(e), getattr(e, "status", 400))
        except ServingError as e:
            err = e
        except Exception:  # the server's own fault (5xx): a canary's error rate counts these
            if record:
                with self._lock:
                    self.totals.failed += 1
            raise
        if record:
            self.count_rejected()
        raise err from None

    def count_rejected(self) -> None:
        """One more refused request (what a protocol adapter refused before evaluate)."""
        with self._lock:
            self.totals.rejected += 1

    def _evaluate(self, X, names, output, quantiles, record, keys=None
                  ) -> tuple[np.ndarray, list[str]]:
        if output not in OUTPUTS:
            raise ServingError(f"unknown output {output!r}; choose one of {list(OUTPUTS)}")
        if record:
            failpoints.fail("serving.evaluate")
        cols = self.columns(X, names)
        qs = options({"output": output, "quantiles": quantiles}, len(cols["x"]), self.limits)[1]
        if self.fleet is not None:
            from mleops.serving import fleet

            return fleet.evaluate_rows(self, cols, keys, output, qs, record)
        if keys is not None:
            raise ServingError("this model is not a fleet: its rows take no key")
        art = self.artifact
        Xd = (np.column_stack([np.ones(len(cols["x"]))] + [cols[c] for c in self.covariates])
              if self.covariates else None)
        if output == "quantiles":
            out = np.column_stack([art.ppf(np.full(len(cols["x"]), q), Xd) for q in qs])
            return self._finite(out, cols["x"]), [f"q{q:g}" for q in qs]
        self._check_support(cols["x"])
        if output == "loglik":
            ll = self._finite(art.loglik_rows(cols["x"], event=cols.get("event"), X=Xd),
                              cols["x"])
            if record:
                self._record(ll)
            return ll, ["loglik"]
        p = self._finite(art.cdf(cols["x"], Xd), cols["x"])
        return (p if output == "cdf" else 1.0 - p), [output]

    def _check_support(self, x: np.ndarray) -> None:
        """Refuse (and count) rows outside the family's support."""
        outside = self._outside(x)
        if outside.any():
            with self._lock:
                self.totals.outside_support += int(outside.sum())
            i = int(np.flatnonzero(outside)[0])
            raise ServingError(f"{int(outside.sum())} value(s) outside the support of "
                               f"{self.fam.name}; first at row {i}: {float(x[i])!r}")

    def _finite(self, out: np.ndarray, x: np.ndarray) -> np.ndarray:
        """A valid response never holds NaN/inf: a value the model cannot evaluate to a
        finite number (an extreme tail in float64) is refused, never answered or counted."""
        out = np.asarray(out, np.float64)
        bad = ~np.isfinite(out.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ServingError(f"{int(bad.sum())} row(s) have no finite result under "
                               f"{self.fam.name} (too far in a tail for float64); "
                               f"first at row {i}: x={float(x[i])!r}", status=422)
        return out

    def _outside(self, x: np.ndarray) -> np.ndarray:
        fam = self.fam
        return np.asarray([fam.check_support(np.array([v])) is not None for v in x]) \
            if fam.check_support(x) else np.zeros(x.shape, bool)

    def _record(self, ll: np.ndarray, canary: bool = False) -> None:
        with self._lock:
            t = self.canary_totals if canary else self.totals
            t.requests += 1
            t.rows += int(ll.size)
            t.loglik_sum += float(ll.sum())
            t.loglik_sq_sum += float(np.square(ll).sum())

    def snapshot(self, canary: bool = False) -> Totals:
        """A consistent copy of the totals (all fields from the same moment); ``canary``: the
        rows a fleet canary's candidate answered (or scored, in shadow mode)."""
        with self._lock:
            return dataclasses.replace(self.canary_totals if canary else self.totals)

    def labels(self) -> dict[str, str]:
        return {"model_name": self.model_name, "model_version": self.model_version}


def read_serving_info(model_dir: str) -> dict:
    """The registered name and version a staged directory was served as ({} if unstaged)."""
    path = os.path.join(model_dir, SERVING_INFO)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def stage_model(artifact: ModelArtifact, target_dir: str, *, name: str, version: str) -> str:
    """Fill a local model directory the way Seldon's storage initializer would."""
    os.makedirs(target_dir, exist_ok=True)
    _drop(target_dir, FLEET_HEADER, FLEET_TABLE)  # a fleet staged here before would win
    artifact.save(target_dir)
    _serving_info(target_dir, name, version)
    return os.path.join(target_dir, FILENAME)


def stage_fleet(art, target_dir: str, *, name: str, version: str) -> str:
    """A local model directory serving a fleet (a :class:`~mleops.fleet_artifact.
    FleetArtifact`) as ONE model: fleet.json + fleet.parquet + serving.json. Returns the
    directory."""
    os.makedirs(target_dir, exist_ok=True)
    _drop(target_dir, FILENAME)
    art.save(target_dir)
    _serving_info(target_dir, name, version)
    return target_dir


def _drop(target_dir: str, *files: str) -> None:
    for f in files:
        if os.path.exists(path := os.path.join(target_dir, f)):
            os.remove(path)


def _serving_info(target_dir: str, name: str, version) -> None:
    with open(os.path.join(target_dir, SERVING_INFO), "w") as f:
        json.dump({"name": name, "version": str(version)}, f)
