"""The family zoo and ``get_family``, which rebuilds a family from its name and options."""

from __future__ import annotations

from mleops.errors import DataError
from mleops.families.base import Family
from mleops.families.continuous import Exponential, Gamma, LogNormal, Normal, StudentT, Weibull
from mleops.families.discrete import NegativeBinomial, Poisson
from mleops.families.mixture import GaussianMixture
from mleops.families.regression import Logistic, NegBinGLM, PoissonGLM
from mleops.families.tail import GenPareto

FAMILIES: dict[str, type[Family]] = {
    c.name: c
    for c in (Normal, LogNormal, Exponential, Gamma, Weibull, StudentT, Poisson,
              NegativeBinomial, GenPareto, GaussianMixture, Logistic, PoissonGLM, NegBinGLM)
}
ALIASES = {"t": "student_t", "nbinom": "negbinom", "negative_binomial": "negbinom",
           "expon": "exponential", "lognorm": "lognormal", "norm": "normal",
           "weibull_min": "weibull", "gpd": "genpareto", "mixture": "gaussian_mixture",
           "gmm": "gaussian_mixture", "bernoulli": "logistic"}


def family_class(name: str) -> type[Family]:
    """The family class for a name (scipy aliases accepted); DataError names the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FAMILIES:
        raise DataError(f"unknown family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[key]


def get_family(name: str | dict | Family, **options) -> Family:
    """Family from a name (scipy aliases accepted) or from ``Family.describe()`` output."""
    if isinstance(name, Family):
        return name
    if isinstance(name, dict):
        options = {**{k: v for k, v in name.items() if k != "name"}, **options}
        name = name["name"]
    key = family_class(name).name
    if "features" in options:
        options["features"] = tuple(options["features"])
    if "features" in options and not FAMILIES[key].uses_covariates:
        raise DataError(f"family {key} takes no covariates (regression families: "
                        f"{', '.join(sorted(n for n, c in FAMILIES.items() if c.uses_covariates))})")
    try:
        return FAMILIES[key](**options)
    except TypeError as e:
        raise DataError(f"bad options for family {key}: {e}") from None


__all__ = ["ALIASES", "Family", "FAMILIES", "family_class", "get_family", "Normal", "LogNormal", "Exponential", "Gamma",
           "Weibull", "StudentT", "Poisson", "NegativeBinomial", "GenPareto",
           "GaussianMixture", "Logistic", "PoissonGLM", "NegBinGLM"]
