"""Seldon Core python-wrapper entry point: `seldon-core-microservice MleopsModel`.

Thin on purpose: the model class lives in mleops.serving.seldon.
"""

from mleops.serving.seldon import MleopsModel

__all__ = ["MleopsModel"]
