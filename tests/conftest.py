import os

# Tests must never touch a user's cache directory.
os.environ.setdefault("MLEOPS_JAX_CACHE", "off")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mleops  # noqa: E402,F401  (float64 on before any test builds arrays)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
