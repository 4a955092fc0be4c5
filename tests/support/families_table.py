"""One table: every one-sample family, a parameter vector, and its scipy.stats counterpart."""

from scipy import stats

# name, natural params (param_names order), scipy frozen distribution, fit kwargs
ONE_SAMPLE = [
    ("normal", [1.5, 2.0], stats.norm(1.5, 2.0), {}),
    ("lognormal", [0.6, 3.0], stats.lognorm(0.6, scale=3.0), {}),
    ("exponential", [2.5], stats.expon(scale=2.5), {}),
    ("gamma", [2.3, 1.7], stats.gamma(2.3, scale=1.7), {}),
    ("weibull", [1.6, 2.2], stats.weibull_min(1.6, scale=2.2), {}),
    ("student_t", [4.5, -1.0, 0.8], stats.t(4.5, -1.0, 0.8), {}),
    ("poisson", [3.7], stats.poisson(3.7), {}),
    ("negbinom", [2.5, 0.3], stats.nbinom(2.5, 0.3), {}),
    ("genpareto", [0.25, 1.3], stats.genpareto(0.25, loc=2.0, scale=1.3), {"threshold": 2.0}),
]
IDS = [row[0] for row in ONE_SAMPLE]
