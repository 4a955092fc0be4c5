"""What one tick's evidence decides: the controller's and the judge's decision code, once.

From an :class:`~mleops.rollout.kernels.observation.Observation` (or a failed read) to a decision, in the
controller's order: impossible rows, the sequential test's block, the guardrails and the
test's own rollback (:func:`weigh`); the metrics timeouts and the rows each step needs
(:func:`settle`); the end of the evidence, promotion or an inconclusive rollback
(:func:`conclude`). Pure functions: the test state and the counters go in, new ones come out,
so the controller (which moves traffic between these stages) and ``mleops judge`` (which only
answers, :mod:`mleops.rollout.judge.core`) reach the same decision on the same numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from mleops.errors import DataError
from mleops.rollout.kernels.config import TestConfig
from mleops.rollout.kernels.guardrails import Guardrails, absurd_breach, breach_of
from mleops.rollout.kernels.observation import Observation
from mleops.rollout.kernels.statistics import SequentialTest, Summary, Verdict

ROLLBACK, HOLD, CONTINUE, PROMOTE = "rollback", "hold", "continue", "promote"


@dataclass(frozen=True)
class Counters:
    """What the decision carries between ticks besides the test: when canary rows last came,
    and how many came at the current step."""

    last_data_at: float
    step_rows: int = 0


@dataclass(frozen=True)
class Decision:
    """One stage's answer. ``action``: ROLLBACK (now, for ``reason``), HOLD (no step this
    tick; ``reason`` says why), CONTINUE (no objection: the next stage decides) or PROMOTE.
    ``test``/``verdict``/``stats`` are None when the tick weighed nothing."""

    action: str
    reason: str
    counters: Counters
    test: dict[str, Any] | None = None
    verdict: Verdict | None = None
    stats: dict[str, Any] | None = None

    def but(self, action: str, reason: str) -> Decision:
        return dataclasses.replace(self, action=action, reason=reason)


def unreadable(error: Exception, counters: Counters, now: float, g: Guardrails) -> Decision:
    """The metrics source is down: no evidence, so hold, then roll back at the timeout."""
    silent = now - counters.last_data_at
    if silent >= g.metrics_timeout_s:
        return Decision(ROLLBACK, f"no canary metrics for {silent:.0f} s ({error})", counters)
    return Decision(HOLD, f"holding: cannot read metrics: {error}", counters)


def weigh(test_state: dict[str, Any], config: TestConfig, obs: Observation, g: Guardrails,
          counters: Counters, now: float) -> Decision:
    """One tick = one block: the test updated with ``obs``, then the guardrails and the test's
    own rollback. CONTINUE carries the new test state, verdict and counters."""
    c = obs.canary_rows
    impossible = int(np.count_nonzero(~np.isfinite(c)))
    if impossible:  # the canary says an observed row cannot happen: nothing to weigh
        return Decision(ROLLBACK, f"canary gave {impossible} live row(s) zero likelihood "
                                  "(log-likelihood -inf)", counters)
    test = SequentialTest(config, test_state)
    try:
        if c.size or obs.champion_rows.size:
            test.update_block(c, obs.champion_rows, canary_requests=obs.canary_requests,
                              champion_requests=obs.champion_requests)
        if obs.canary_sums is not None or obs.champion_sums is not None:
            test.update_sums(obs.canary_sums or Summary(), obs.champion_sums or Summary())
    except DataError as e:  # unusable numbers are no evidence: hold (and time out)
        return Decision(HOLD, f"holding: unusable metrics: {e}", counters)
    verdict = test.verdict()
    if obs.canary_count:
        counters = Counters(now, counters.step_rows + obs.canary_count)
    d = Decision(CONTINUE, verdict.reason, counters, test.to_dict(), verdict,
                 {**obs.arms, "excluded": test.excluded})
    if breach := breach_of(obs.arms, g) or absurd_breach(test.excluded, verdict, g):
        return d.but(ROLLBACK, breach)
    if verdict.decision == "rollback":
        return d.but(ROLLBACK, f"live log-likelihood dropped: {verdict.reason}")
    return d


def settle(d: Decision, obs: Observation, g: Guardrails, now: float) -> Decision:
    """After :func:`weigh`: silent canary metrics hold, then roll back; a step that has not
    seen ``step_min_rows`` canary rows holds (its reason: the verdict's)."""
    silent = now - d.counters.last_data_at
    refused = obs.arms.get("client_errors") or 0
    why = (f"; {refused} request(s) were refused as client errors by both versions or "
           "before routing (malformed, or not the columns the model takes): not the "
           "canary's likelihood" if refused else "")
    if silent >= g.metrics_timeout_s:
        return d.but(ROLLBACK, f"no canary metrics for {silent:.0f} s: no promotion without "
                               f"evidence{why}")
    if silent >= g.hold_after_s:
        return d.but(HOLD, f"holding: no canary metrics for {silent:.0f} s{why}")
    if d.counters.step_rows < g.step_min_rows:
        return d.but(HOLD, d.reason)
    return d


def conclude(d: Decision, g: Guardrails) -> Decision:
    """Where promotion is at stake: PROMOTE on ``not_worse``; ROLLBACK when ``max_rows``
    canary rows left the test inconclusive; else CONTINUE (waiting for evidence)."""
    verdict = d.verdict
    if verdict.decision == "not_worse":
        return d.but(PROMOTE, verdict.reason)
    if verdict.rows_canary >= g.max_rows:
        return d.but(ROLLBACK, f"inconclusive after {verdict.rows_canary} canary rows: no "
                               "promotion without evidence")
    return d.but(CONTINUE, verdict.reason)


def decide(test_state: dict[str, Any], config: TestConfig, obs: Observation, g: Guardrails,
           counters: Counters, now: float) -> Decision:
    """The three stages at once, for a judge at the last step (the controller runs them
    apart: it moves traffic in between)."""
    d = weigh(test_state, config, obs, g, counters, now)
    if d.action != CONTINUE:
        return d
    d = settle(d, obs, g, now)
    return conclude(d, g) if d.action == CONTINUE else d


__all__ = ["CONTINUE", "Counters", "Decision", "HOLD", "PROMOTE", "ROLLBACK", "conclude",
           "decide", "settle", "unreadable", "weigh"]
