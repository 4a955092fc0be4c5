import os

# Tests must never touch a user's cache directory, nor record data planes in their home.
os.environ.setdefault("MLEOPS_JAX_CACHE", "off")
if "MLEOPS_PLANE_DIR" not in os.environ:
    import tempfile

    os.environ["MLEOPS_PLANE_DIR"] = tempfile.mkdtemp(prefix="mleops-planes-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# One MLflow server (and one PostgreSQL/S3 stack, one Prometheus) per test session (per xdist
# worker), shared by every module: a test module must not import these itself (a session fixture imported into a
# module is that module's own instance, one more server). Registry tests use their own model
# names (a uuid, or a name no other module registers) so they can share it.
from support.mlflow_server import mlflow_production, mlflow_server  # noqa: E402,F401
from support.prometheus import prometheus, prometheus_session  # noqa: E402,F401

import mleops  # noqa: E402,F401  (float64 on before any test builds arrays)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def gamma_model(tmp_path_factory):
    """A gamma model of latencies, staged as registered model "latency" version 7."""
    from mleops.artifact import ModelArtifact
    from mleops.serving.service import stage_model

    x = np.random.default_rng(0).gamma(2.0, 1.5, 3000)
    art = ModelArtifact.from_fit(mleops.fit(x, "gamma"))
    d = tmp_path_factory.mktemp("gamma")
    stage_model(art, str(d), name="latency", version="7")
    return art, str(d)
