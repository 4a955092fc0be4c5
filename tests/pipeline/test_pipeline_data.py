"""Data where users keep it: CSV, Parquet and hive-partitioned Parquet directories, read
locally and from a real S3 API on 127.0.0.1 (moto's server, checking signatures). The same
bytes key the cache alike wherever they are read; every failure is one line and exit 2."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.s3 import client, s3_server

from mleops.errors import DataError
from mleops.pipeline.dataset import ColumnSpec, load_source

MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
BUCKET = "telemetry"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The same files on local disk: a CSV, a Parquet file, a partitioned dataset."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(5)
    x = rng.gamma(2.0, 1.5, 300)
    np.savetxt(d / "lat.csv", x, header="latency", comments="", fmt="%.10g")
    pq.write_table(pa.table({"latency": x}), d / "lat.parquet")
    for day in (1, 2, 3):
        part = d / "parts" / f"day={day}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"latency": x[(day - 1) * 100: day * 100]}),
                       part / "part-0.parquet")
    (d / "parts" / "_SUCCESS").write_text("")  # writers' markers are not data
    return d


@pytest.fixture(scope="module")
def s3(local):
    with s3_server(BUCKET, auth=True) as env:
        c = client(env)
        for root, _, files in os.walk(local):
            for name in files:
                p = os.path.join(root, name)
                c.upload_file(p, BUCKET, "in/" + os.path.relpath(p, local))
        yield env


@pytest.fixture
def aws(s3, monkeypatch):
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    return s3


SPEC = ColumnSpec.from_params("latency", "", "", "", "")


@pytest.mark.parametrize("name,rows", [("lat.csv", 300), ("lat.parquet", 300),
                                       ("parts", 300), ("parts/day=2", 100)])
def test_s3_and_local_copies_read_alike_and_hash_alike(aws, local, name, rows):
    remote = load_source(f"s3://{BUCKET}/in/{name}", SPEC, "gamma")
    here = load_source(str(local / name), SPEC, "gamma")
    assert remote.n == here.n == rows
    np.testing.assert_array_equal(remote.x, here.x)
    assert remote.meta["data_hash"] == here.meta["data_hash"]
    assert remote.meta["source"] == f"s3://{BUCKET}/in/{name}"


def test_hive_partitions_become_columns_and_a_changed_part_changes_the_hash(aws, local,
                                                                            tmp_path):
    from mleops.io import read_table

    cols = read_table(f"s3://{BUCKET}/in/parts")
    assert sorted(set(cols["day"].tolist())) == [1, 2, 3]
    np.testing.assert_array_equal(cols["latency"][cols["day"] == 3],
                                  load_source(str(local / "parts/day=3"), SPEC, "gamma").x)
    copy = tmp_path / "parts"
    shutil.copytree(local / "parts", copy)
    before = load_source(str(copy), SPEC, "gamma").meta["data_hash"]
    t = pq.read_table(copy / "day=1" / "part-0.parquet")
    pq.write_table(t.slice(1), copy / "day=1" / "part-0.parquet")
    assert load_source(str(copy), SPEC, "gamma").meta["data_hash"] != before


def _cli(env, *args):
    return subprocess.run([MLEOPS, "pipeline", "run", "--family", "gamma", "--model-name", "m",
                           "--tracking-uri", "http://127.0.0.1:9", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, "MLEOPS_JAX_CACHE": "off"})


@pytest.mark.parametrize("uri,message", [
    (f"s3://{BUCKET}/in/missing.csv", f"training data: data not found: s3://{BUCKET}/in/"
                                      "missing.csv"),
    ("s3://no-such-bucket/in/lat.csv", "training data: bucket 'no-such-bucket' not found"),
    (f"s3://{BUCKET}/in/empty/", "data not found"),
    ("nope://x/lat.csv", "no filesystem for nope://"),
])
def test_unreadable_data_is_one_line_and_exit_2(s3, uri, message):
    out = _cli(s3, "--data", uri)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_bad_credentials_are_one_line_and_exit_2(s3):
    out = _cli({**s3, "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
               "--data", f"s3://{BUCKET}/in/lat.csv")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "access denied reading s3://telemetry/in/lat.csv" in lines[0]
    assert "AWS_SECRET_ACCESS_KEY" in lines[0]


def test_validation_data_errors_name_the_validation_file(aws, local, tmp_path):
    from mleops.pipeline.runner import RunRequest

    other = tmp_path / "other.csv"
    other.write_text("duration\n" + "\n".join(["1.5"] * 50) + "\n")
    few = tmp_path / "few.csv"
    few.write_text("latency\n1.0\n2.0\n")
    base = dict(data_uri=f"s3://{BUCKET}/in/lat.parquet", family="gamma", model_name="m")
    with pytest.raises(DataError, match=r"validation data .*other.csv: column 'latency' not"):
        RunRequest(**base, validation_data_uri=str(other)).validate()
    with pytest.raises(DataError, match=r"validation data .*few.csv: 2 row\(s\); the gate needs "
                                        r"at least 10 held-out rows"):
        RunRequest(**base, validation_data_uri=str(few)).validate()
    with pytest.raises(DataError, match="validation data: data not found: s3://"):
        RunRequest(**base, validation_data_uri=f"s3://{BUCKET}/none.csv").validate()
