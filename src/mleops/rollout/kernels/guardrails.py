"""Limits besides likelihood: any breach rolls a canary back at once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mleops.errors import DataError


@dataclass(frozen=True)
class Guardrails:
    """Limits besides likelihood; any breach rolls back at once."""

    max_error_rate: float = 0.05  # canary failures / canary requests
    min_requests: int = 10  # canary requests before the error/latency rates count
    max_outside_support_rate: float = 0.02  # excess over the champion's, per request
    max_absurd_rate: float = 0.01  # excess of absurd rows (the test leaves them out), per row
    min_absurd_rows: int = 10  # ... and at least this many of them: a glitch or two is not a trend
    max_p99_ms: float = 1000.0
    step_min_rows: int = 200  # canary rows at each step before it may advance
    max_rows: int = 50_000  # canary rows without a decision: inconclusive -> rollback
    hold_after_s: float = 20.0  # no new canary rows for this long: hold (say so)
    metrics_timeout_s: float = 120.0  # ... and for this long: roll back

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0 \
                    or not math.isfinite(v):
                raise DataError(f"guardrail {f.name} must be a positive number, got {v!r}")
        if not self.max_error_rate < 1 or not self.max_outside_support_rate < 1 \
                or not self.max_absurd_rate < 1:
            raise DataError("guardrail rates must be below 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Guardrails:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in
                                                          dataclasses.fields(cls)}})


def breach_of(arms: dict[str, dict[str, Any]], g: Guardrails) -> str:
    """The first guardrail the canary breaks (a sentence for the rollback reason), or ""."""
    c, p = arms.get("canary") or {}, arms.get("champion") or {}
    n = c.get("requests", 0)
    if n < g.min_requests:
        return ""
    if (rate := c.get("errors", 0) / n) > g.max_error_rate:
        kinds = ", ".join(f"{v} {k}" for k, v in sorted(
            (c.get("error_kinds") or {}).items(), key=lambda kv: -kv[1]) if v)
        basis = c.get("error_basis")  # what the backend counts as an error
        return (f"canary error rate {rate:.1%} > {g.max_error_rate:.1%} ({n:.0f} requests"
                f"{'; ' + kinds if kinds else ''}{'; ' + basis if basis else ''})")
    excess = c.get("outside_support_rate", 0.0) - p.get("outside_support_rate", 0.0)
    if excess > g.max_outside_support_rate:
        return (f"canary refuses {excess:.1%} more requests as outside its support than "
                f"the champion (limit {g.max_outside_support_rate:.1%})")
    if (p99 := c.get("p99_ms")) is not None and p99 > g.max_p99_ms:
        return f"canary p99 latency {p99:.0f} ms > {g.max_p99_ms:.0f} ms"
    return ""


def absurd_breach(excluded: dict[str, dict[str, int]], verdict, g: Guardrails) -> str:
    """Rows the test left out (not a number, or absurd: far below their block's median) are
    evidence of their own: a canary producing clearly more of them than the champion is
    rolled back, with that reason; a handful (a glitch) is not."""
    rows = {"canary": verdict.rows_canary, "champion": verdict.rows_champion}
    rate = {a: sum(excluded.get(a, {}).values()) / max(rows[a] + sum(
        excluded.get(a, {}).values()), 1) for a in rows}
    count = sum(excluded.get("canary", {}).values())
    if count >= g.min_absurd_rows and rate["canary"] - rate["champion"] > g.max_absurd_rate:
        return (f"canary gave {rate['canary']:.1%} absurd or non-numeric log-likelihood rows "
                f"(champion {rate['champion']:.1%}; limit +{g.max_absurd_rate:.1%})")
    return ""


__all__ = ["Guardrails", "absurd_breach", "breach_of"]
