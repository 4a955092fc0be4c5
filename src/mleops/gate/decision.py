"""The registration gate: may a candidate model replace the champion?

Two checks, both required:

* likelihood: on the SAME held-out rows, the per-row differences
  d_i = log f_cand(x_i) - log f_champ(x_i) are paired, so their noise largely cancels. Three
  outcomes, from the one-sided confidence bounds of mean(d) (Vuong's normal bounds,
  mean -+ z * sd / sqrt(n), or a seeded percentile bootstrap):

  - ``not_worse``: the lower bound is >= -tolerance (at most ``tolerance`` nats/row worse,
    with the stated confidence);
  - ``worse``: the ``worse_confidence`` (80%) upper bound is < -tolerance: the rows show it
    is worse than that. A weaker bound than the lower one on purpose: an equally good
    retrain sits a whole tolerance above the margin, so it is almost never called worse,
    while a candidate 0.02 nats/row worse is caught >= 99% of the time at 2,000 rows;
  - ``inconclusive``: neither; the held-out rows cannot tell two honest fits apart (their
    difference is estimation noise of order k/(2n) nats/row for k parameters and n training
    rows, below what a few thousand held-out rows resolve). ``on_inconclusive="register"``
    (the default) registers it as challenger, so the canary decides on live traffic;
    ``"reject"`` keeps the old burden of proof on the candidate.

  Comparing two averages without pairing would throw the cancellation away.
* calibration: KS distance of the PIT and worst central-coverage error (continuous / count),
  or expected calibration error (binary), within configured limits. Like the likelihood
  check, a candidate fails only when the data show it is beyond a limit: the observed KS
  distance minus its sampling allowance at the stated confidence (DKW: sqrt(ln(2/(1-c))/2n))
  must exceed ``ks_max``, and a coverage error its binomial allowance. Without that, 400
  held-out rows of a correctly specified model exceed KS 0.05 about a quarter of the time
  (0.05 is below the 95% critical value 0.068 at that n) and good retrains get rejected.

Without a champion (the first model) only calibration is checked, and the reasons say so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from mleops._config import GATE_TOLERANCE, INCONCLUSIVE_POLICIES

TESTS = ("z", "bootstrap")
DEFAULT_TOLERANCE = GATE_TOLERANCE  # the one default (see mleops._config)
#: calibration numbers copied into ``GateDecision.stats`` (None where the kind lacks them)
CALIB_STATS = ("kind", "ks", "ks_max", "ks_pvalue", "coverage_50", "coverage_80", "coverage_95",
               "coverage_error_max", "coverage_tol", "ece", "ece_max")


@dataclass
class GateConfig:
    tolerance: float = DEFAULT_TOLERANCE  # allowed deficit in average log-likelihood per held-out row (nats)
    confidence: float = 0.95  # one-sided confidence of the lower bound
    test: str = "z"  # "z" (Vuong normal bound) or "bootstrap" (percentile bound)
    n_boot: int = 2000
    seed: int = 0
    ks_max: float = 0.05
    coverage_tol: float = 0.05
    ece_max: float = 0.05
    on_inconclusive: str = INCONCLUSIVE_POLICIES[0]  # what an inconclusive likelihood comparison does
    worse_confidence: float = 0.8  # one-sided confidence of the upper bound that says "worse"

    def __post_init__(self):
        def num(name, lo, hi, lo_open=False, hi_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"GateConfig.{name} must be a finite number, got {v!r}")
            if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
                raise ValueError(f"GateConfig.{name} must lie in {'(' if lo_open else '['}{lo}, "
                                 f"{hi}{')' if hi_open else ']'}, got {v!r}")
            setattr(self, name, float(v))

        num("tolerance", 0.0, math.inf, hi_open=True)
        num("confidence", 0.5, 1.0, lo_open=True, hi_open=True)
        num("worse_confidence", 0.5, 1.0, hi_open=True)
        num("ks_max", 0.0, 1.0, lo_open=True)
        num("coverage_tol", 0.0, 1.0)
        num("ece_max", 0.0, 1.0)
        if self.on_inconclusive not in INCONCLUSIVE_POLICIES:
            raise ValueError(f"GateConfig.on_inconclusive must be one of "
                             f"{INCONCLUSIVE_POLICIES}, got {self.on_inconclusive!r}")
        if self.test not in TESTS:
            raise ValueError(f"GateConfig.test must be one of {TESTS}, got {self.test!r}")
        for name, lo in (("n_boot", 100), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"GateConfig.{name} must be an integer >= {lo}, got {v!r}")
            setattr(self, name, int(v))


@dataclass
class GateDecision:
    passed: bool  # registered (not_worse, or inconclusive under on_inconclusive="register")
    reasons: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    outcome: str = ""  # passed | inconclusive | rejected

    def to_dict(self) -> dict:
        return asdict(self)


def _finite_rows(a, what: str) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: cannot be read as numbers ({e})") from None
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{what}: expected a 1-D array of at least 2 per-row log-likelihoods, "
                         f"got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: {int(bad.sum())} non-finite per-row log-likelihood(s); first "
                         f"at row {i}: {arr[i].item()!r} (-inf means the model gives a held-out "
                         f"row zero probability)")
    return arr


def _bootstrap_means(d: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``d``, drawn in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // d.size)
    means = np.empty(n_boot)
    for s in range(0, n_boot, chunk):
        k = min(chunk, n_boot - s)
        means[s:s + k] = d[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    return means


def _likelihood_check(cand: np.ndarray, champ: np.ndarray, cfg: GateConfig):
    d = cand - champ
    n, mean = d.size, float(d.mean())
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    z_crit = float(stats.norm.ppf(cfg.confidence))
    gap = mean + cfg.tolerance  # distance above the non-inferiority margin
    if se > 0:
        z = gap / se
        p_value = float(stats.norm.sf(z))
    else:  # every difference equal: no sampling noise to test against
        z = None
        p_value = 0.0 if gap >= 0 else 1.0
    st = {"n": n, "mean_diff": mean, "sd_diff": sd, "se": se, "z": z, "z_crit": z_crit,
          "candidate_avg_loglik": float(cand.mean()), "champion_avg_loglik": float(champ.mean())}
    if cfg.test == "z":
        lb = mean - z_crit * se
        ub = mean + float(stats.norm.ppf(cfg.worse_confidence)) * se
    else:
        boot = _bootstrap_means(d, cfg.n_boot, cfg.seed)
        lb, ub = (float(np.quantile(boot, q)) for q in (1 - cfg.confidence,
                                                         cfg.worse_confidence))
        p_value = float(np.mean(boot < -cfg.tolerance))  # share of resamples below the margin
    st.update(p_value=p_value, lower_bound=float(lb), upper_bound=float(ub))
    margin = -cfg.tolerance
    outcome = "not_worse" if lb >= margin else ("worse" if ub < margin else "inconclusive")
    st["likelihood_outcome"] = outcome
    head = (f"candidate - champion mean per-row log-likelihood {mean:+.5g} nats over {n} "
            f"paired held-out rows; bounds ({cfg.test}, {cfg.confidence:.0%} lower, "
            f"{cfg.worse_confidence:.0%} upper) [{lb:+.5g}, {ub:+.5g}] vs -tolerance "
            f"{margin:+.5g}")
    reason = {"not_worse": f"likelihood passes: {head}: not worse",
              "worse": f"likelihood FAILS: {head}: worse beyond the tolerance",
              "inconclusive": f"likelihood INCONCLUSIVE: {head}: the held-out rows cannot tell "
                              f"(" + ("registered as challenger: the canary decides on live "
                                      "traffic)" if cfg.on_inconclusive == "register" else
                                      "on_inconclusive=reject)")}[outcome]
    ok = outcome == "not_worse" or (outcome == "inconclusive"
                                    and cfg.on_inconclusive == "register")
    return ok, reason, st


def _need(calib: dict, key: str):
    v = calib.get(key)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"calibration dict lacks a finite {key!r} (got {v!r}) for kind "
                         f"{calib.get('kind')!r}")
    return float(v)


def _calibration_check(calib: dict, cfg: GateConfig):
    kind = calib.get("kind")
    st: dict = dict.fromkeys(CALIB_STATS)
    st["kind"] = kind
    if kind == "binary":
        ece = _need(calib, "ece")
        st.update(ece=ece, ece_max=cfg.ece_max)
        ok = ece <= cfg.ece_max
        reasons = [f"calibration {'passes' if ok else 'FAILS'}: ECE {ece:.4g} "
                   f"{'<=' if ok else '>'} {cfg.ece_max:.4g}"]
        return ok, reasons, st
    if kind not in ("continuous", "count"):
        raise ValueError(f"calibration dict has unknown kind {kind!r}; expected continuous, "
                         "count or binary (from mleops.gate.calibration)")
    ks, cerr = _need(calib, "ks"), _need(calib, "coverage_error_max")
    n = calib.get("n_used") or calib.get("n")
    n = int(n) if isinstance(n, int | float) and not isinstance(n, bool) and n >= 1 else 0
    # sampling allowances at the gate's confidence (0 when n is unknown: the bare limits)
    ks_slack = math.sqrt(math.log(2.0 / (1.0 - cfg.confidence)) / (2.0 * n)) if n else 0.0
    z = float(stats.norm.ppf(cfg.confidence))
    cov_slack = z * math.sqrt(0.25 / n) if n else 0.0  # binomial sd at its largest (p = 1/2)
    st.update(ks=ks, ks_max=cfg.ks_max, ks_pvalue=calib.get("ks_pvalue"),
              coverage_error_max=cerr, coverage_tol=cfg.coverage_tol)
    for k in ("coverage_50", "coverage_80", "coverage_95"):
        st[k] = calib.get(k)
    ks_ok, cov_ok = ks - ks_slack <= cfg.ks_max, cerr - cov_slack <= cfg.coverage_tol
    pit = "randomized PIT" if kind == "count" else "PIT"
    reasons = [f"calibration {'passes' if ks_ok else 'FAILS'}: KS distance of the {pit} from "
               f"uniform {ks:.4g} (- {ks_slack:.3g} sampling allowance, n={n}) "
               f"{'<=' if ks_ok else '>'} {cfg.ks_max:.4g}",
               f"calibration {'passes' if cov_ok else 'FAILS'}: worst central-interval coverage "
               f"error {cerr:.4g} (- {cov_slack:.3g}) {'<=' if cov_ok else '>'} "
               f"{cfg.coverage_tol:.4g}"]
    return ks_ok and cov_ok, reasons, st


def decide(candidate_ll, champion_ll, calib: dict, config: GateConfig | None = None
           ) -> GateDecision:
    """Gate a candidate: paired non-inferiority in held-out likelihood plus calibration.

    ``candidate_ll``/``champion_ll`` are per-row log-likelihoods on the same held-out rows
    (``champion_ll=None`` for the first model); ``calib`` is the candidate's
    ``evaluate.calibration`` dict. Raises ``ValueError`` on non-finite or mismatched input.
    """
    cfg = config if config is not None else GateConfig()
    if not isinstance(calib, dict):
        raise ValueError(f"calib must be the dict from evaluate.calibration, got {type(calib)}")
    cand = _finite_rows(candidate_ll, "candidate_ll")
    st: dict = {"n": int(cand.size), "tolerance": cfg.tolerance, "confidence": cfg.confidence,
                "test": cfg.test, "n_boot": cfg.n_boot if cfg.test == "bootstrap" else None,
                "has_champion": champion_ll is not None,
                "candidate_avg_loglik": float(cand.mean())}
    reasons: list[str] = []
    if champion_ll is None:
        ll_ok = True
        st.update(dict.fromkeys(("mean_diff", "sd_diff", "se", "z", "z_crit", "p_value",
                                 "lower_bound", "upper_bound", "champion_avg_loglik")))
        st["likelihood_outcome"] = "first_model"
        reasons.append("no champion registered: first model, gated on calibration alone")
    else:
        champ = _finite_rows(champion_ll, "champion_ll")
        if champ.shape != cand.shape:
            raise ValueError(f"candidate_ll and champion_ll must score the same held-out rows: "
                             f"shapes {cand.shape} and {champ.shape} differ")
        ll_ok, reason, ll_st = _likelihood_check(cand, champ, cfg)
        st.update(ll_st)
        reasons.append(reason)
    cal_ok, cal_reasons, cal_st = _calibration_check(calib, cfg)
    st.update(cal_st)
    reasons.extend(cal_reasons)
    st.update(likelihood_passed=bool(ll_ok), calibration_passed=bool(cal_ok))
    passed = bool(ll_ok and cal_ok)
    outcome = ("rejected" if not passed else
               "inconclusive" if st["likelihood_outcome"] == "inconclusive" else "passed")
    return GateDecision(passed=passed, reasons=reasons, stats=st, outcome=outcome)


def outcome_of(decision: dict) -> str:
    """``passed`` / ``inconclusive`` / ``rejected`` of a decision dict (also one written
    before outcomes existed)."""
    return decision.get("outcome") or ("passed" if decision.get("passed") else "rejected")


__all__ = ["DEFAULT_TOLERANCE", "INCONCLUSIVE_POLICIES", "GateConfig", "GateDecision", "decide", "outcome_of"]
