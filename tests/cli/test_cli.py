"""The real ``mleops`` console script, run as a subprocess on CSV and Parquet files."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import mleops

MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")


def run(*args):
    return subprocess.run([MLEOPS, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLEOPS_JAX_CACHE": "off"})


@pytest.fixture(scope="module")
def survival_files(tmp_path_factory):
    rng = np.random.default_rng(4)
    n = 3000
    age = rng.uniform(20, 70, n)
    t = rng.weibull(1.4, n) * 10
    c = rng.uniform(2, 20, n)
    table = pa.table({"latency": np.minimum(t, c), "observed": (t <= c).astype(int),
                      "age": age, "w": rng.integers(1, 3, n).astype(float),
                      "count": rng.poisson(np.exp(0.5 + 0.01 * age)),
                      "label": np.where(rng.random(n) < 0.5, "a", "b")})
    d = tmp_path_factory.mktemp("cli")
    pcsv.write_csv(table, d / "data.csv")
    pq.write_table(table, d / "data.parquet")
    return d, table


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_fit_json_matches_library(survival_files, fmt):
    d, table = survival_files
    out = run("fit", str(d / f"data.{fmt}"), "--family", "weibull", "--column", "latency",
              "--censor-column", "observed", "--weights-column", "w", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    ref = mleops.fit(table["latency"].to_numpy(), "weibull",
                     event=table["observed"].to_numpy(), weights=table["w"].to_numpy())
    assert set(got) >= {"params", "se", "loglik", "aic", "bic", "converged", "iterations"}
    assert got["converged"] is True
    np.testing.assert_allclose([got["params"]["shape"], got["params"]["scale"]], ref.values,
                               rtol=1e-10)
    np.testing.assert_allclose(got["loglik"], ref.loglik, rtol=1e-12)


def test_covariates_get_an_intercept_named_const(survival_files):
    d, _ = survival_files
    out = run("fit", str(d / "data.csv"), "--family", "poisson_glm", "--column", "count",
              "--covariates", "age", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert list(got["params"]) == ["const", "age"]
    assert abs(got["params"]["age"] - 0.01) < 5 * got["se"]["age"]


def test_threshold_and_human_summary(survival_files):
    d, _ = survival_files
    out = run("fit", str(d / "data.csv"), "--family", "genpareto", "--column", "latency",
              "--threshold", "5")
    assert out.returncode == 0, out.stderr
    assert "shape" in out.stdout and "converged=True" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--column", "nope"], "column 'nope' not found; available columns: latency, observed"),
    (["--column", "label"], "column 'label' must be numeric"),
    (["--column", "latency", "--censor-column", "age"], "must be 0 (censored) or 1 (observed)"),
    (["--column", "age", "--family", "poisson"], "non-negative integers"),
    ([], "choose the response with --column"),
])
def test_bad_input_exits_2_with_one_line(survival_files, args, message):
    d, _ = survival_files
    family = [] if "--family" in args else ["--family", "gamma"]
    out = run("fit", str(d / "data.csv"), *family, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr and out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr


def test_missing_file_and_malformed_csv(tmp_path):
    out = run("fit", str(tmp_path / "absent.csv"), "--family", "gamma")
    assert out.returncode == 2 and "not found" in out.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("x\n1.0\n2.0,3.0\n")
    out = run("fit", str(bad), "--family", "gamma")
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_fit_command_imports_neither_mlflow_nor_kfp(survival_files):
    d, _ = survival_files
    code = ("import sys\nfrom mleops.cli.main import main\n"
            f"sys.argv = ['mleops', 'fit', {str(d / 'data.csv')!r}, '--family', 'gamma', "
            "'--column', 'latency']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('mlflow', 'kfp', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "MLEOPS_JAX_CACHE": "off"})
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_subcommands_load_when_named():
    """``mleops fit`` imports no other command's module; ``--help`` and each name find them."""
    from click.testing import CliRunner

    from mleops.cli.main import LAZY, main

    probe = ("import sys, json; import mleops.cli.main; "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mleops.cli.'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert loaded == {"mleops.cli.main", "mleops.cli.exits", "mleops.cli.options"}
    listed = CliRunner().invoke(main, ["--help"]).output
    for name, target in LAZY.items():
        cmd = main.get_command(None, name)
        assert cmd is not None and cmd.name == name and f"\n  {name} " in listed, target
    assert "\n  fit " in listed


def test_jax_import_reads_only_jax_distributions_metadata():
    """jax's ROCm-plugin scan (every distribution's metadata, jax-ml/jax#37879) is narrowed
    to jax's own distributions while mleops imports it; jax and jaxlib are still read."""
    probe = ("import importlib.metadata as md, json\nseen = []\n"
             "real = md.PathDistribution.metadata\n"
             "md.PathDistribution.metadata = property("
             "lambda self: (seen.append(self._normalized_name), real.fget(self))[1])\n"
             "import mleops\nprint(json.dumps(seen))\n"
             "assert md.distributions.__module__ == 'importlib.metadata'\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"jax", "jaxlib"} <= set(seen) and all(n.startswith("jax") for n in seen), seen
