"""Where models logged by mleops 0.1.0 find their pyfunc class (their code says
``from mleops.pyfunc_model import MleopsPyfunc``); it lives in :mod:`mleops.registry.pyfunc`.

Kept so that registered versions keep loading: the artifact format does not change.
"""

from mleops.registry.pyfunc import MleopsPyfunc

__all__ = ["MleopsPyfunc"]
