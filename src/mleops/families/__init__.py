"""The family zoo and ``get_family``, which rebuilds a family from its name and options."""

from __future__ import annotations

from ..errors import DataError
from .base import Family
from .continuous import Exponential, Gamma, LogNormal, Normal, StudentT, Weibull
from .discrete import NegativeBinomial, Poisson
from .mixture import GaussianMixture
from .regression import Logistic, NegBinGLM, PoissonGLM
from .tail import GenPareto

FAMILIES: dict[str, type[Family]] = {
    c.name: c
    for c in (Normal, LogNormal, Exponential, Gamma, Weibull, StudentT, Poisson,
              NegativeBinomial, GenPareto, GaussianMixture, Logistic, PoissonGLM, NegBinGLM)
}
ALIASES = {"t": "student_t", "nbinom": "negbinom", "negative_binomial": "negbinom",
           "expon": "exponential", "lognorm": "lognormal", "norm": "normal",
           "weibull_min": "weibull", "gpd": "genpareto", "mixture": "gaussian_mixture",
           "gmm": "gaussian_mixture", "bernoulli": "logistic"}


def get_family(name: str | dict | Family, **options) -> Family:
    """Family from a name (scipy aliases accepted) or from ``Family.describe()`` output."""
    if isinstance(name, Family):
        return name
    if isinstance(name, dict):
        options = {**{k: v for k, v in name.items() if k != "name"}, **options}
        name = name["name"]
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FAMILIES:
        raise DataError(f"unknown family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    if "features" in options:
        options["features"] = tuple(options["features"])
    if "features" in options and not FAMILIES[key].uses_covariates:
        raise DataError(f"family {key} takes no covariates (regression families: "
                        f"{', '.join(sorted(n for n, c in FAMILIES.items() if c.uses_covariates))})")
    try:
        return FAMILIES[key](**options)
    except TypeError as e:
        raise DataError(f"bad options for family {key}: {e}") from None


__all__ = ["Family", "FAMILIES", "get_family", "Normal", "LogNormal", "Exponential", "Gamma",
           "Weibull", "StudentT", "Poisson", "NegativeBinomial", "GenPareto",
           "GaussianMixture", "Logistic", "PoissonGLM", "NegBinGLM"]
