"""mleops: maximum-likelihood models from fit to production.

The public API is re-exported here; code lives in the submodules.
"""

from mleops import _config  # noqa: F401  (float64 before anything touches jax)
from mleops._config import enable_compilation_cache
from mleops._version import __version__
from mleops.errors import ConvergenceWarning, DataError, FitError, MleopsError
from mleops.families import FAMILIES, Family, get_family
from mleops.fit import BatchFitResult, FitResult, fit, fit_many, fit_minibatch
from mleops.fit.fleet import fit_fleet
from mleops.fit.fleet_result import FleetResult
from mleops.fit.inference import lr_test, wald_z
from mleops.fit.likelihood import row_loglik

__all__ = ["fit", "fit_many", "fit_minibatch", "FitResult", "BatchFitResult", "fit_fleet",
           "FleetResult", "get_family",
           "Family", "FAMILIES", "lr_test", "wald_z", "row_loglik", "DataError", "FitError",
           "MleopsError", "ConvergenceWarning", "enable_compilation_cache", "__version__"]
