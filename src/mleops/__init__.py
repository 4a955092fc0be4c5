"""mleops: maximum-likelihood models from fit to production.

The public API is re-exported here; code lives in the submodules.
"""

from . import _config  # noqa: F401  (float64 before anything touches jax)
from ._config import enable_compilation_cache
from .errors import ConvergenceWarning, DataError, FitError, MleopsError
from .families import FAMILIES, Family, get_family
from .fit import BatchFitResult, FitResult, fit, fit_many, fit_minibatch
from .inference import lr_test, wald_z
from .likelihood import row_loglik

__version__ = "0.1.0"

__all__ = ["fit", "fit_many", "fit_minibatch", "FitResult", "BatchFitResult", "get_family",
           "Family", "FAMILIES", "lr_test", "wald_z", "row_loglik", "DataError", "FitError",
           "MleopsError", "ConvergenceWarning", "enable_compilation_cache", "__version__"]
