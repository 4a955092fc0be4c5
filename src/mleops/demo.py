"""``make demo``: the main job on embedded defaults.

Until the end-to-end pipeline lands this fits the bundled example (simulated request
latencies with right-censoring at a client timeout) with several families and prints the
comparison a user would start from.
"""

from __future__ import annotations

import numpy as np

from . import fit


def latency_example(n: int = 20000, seed: int = 0, timeout: float = 0.8):
    """Weibull-ish latencies in seconds, censored at a client ``timeout``."""
    rng = np.random.default_rng(seed)
    t = 0.35 * rng.weibull(1.4, n)
    event = (t <= timeout).astype(float)
    return np.minimum(t, timeout), event


def main() -> None:
    x, event = latency_example()
    print(f"example: {x.size} latencies, {int((event == 0).sum())} censored at the timeout")
    for family in ("weibull", "gamma", "lognormal", "exponential"):
        r = fit(x, family, event=event)
        print(f"\n{r.summary()}")


if __name__ == "__main__":
    main()
