import os

# Tests must never touch a user's cache directory, nor record data planes in their home.
os.environ.setdefault("MLEOPS_JAX_CACHE", "off")
if "MLEOPS_PLANE_DIR" not in os.environ:
    import tempfile

    os.environ["MLEOPS_PLANE_DIR"] = tempfile.mkdtemp(prefix="mleops-planes-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# One MLflow server (and one PostgreSQL/S3 stack) per test session for the modules that do not
# import their own: a session fixture imported into a module is that module's own instance.
from support.mlflow_server import mlflow_production, mlflow_server  # noqa: E402,F401

import mleops  # noqa: E402,F401  (float64 on before any test builds arrays)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
