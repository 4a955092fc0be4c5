"""A fleet (thousands of keyed models of one family, one artifact) served as ONE model: each
row carries its key (a BYTES tensor per key column over OIP v2), rows of many keys answered by
one vmapped gather, every bad key a 4xx counted as rejected, metrics per fleet (not per key),
and `mleops serve` staging a registered fleet version."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pandas as pd
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.infer_type import InferInput, InferRequest
from support.http import send as http_send

import mleops
from mleops.artifact import FILENAME, ModelArtifact
from mleops.families import get_family
from mleops.fleet_artifact import HEADER, FleetArtifact
from mleops.serving.contract import Limits
from mleops.serving.model_dir import resolve_model_dir
from mleops.serving.oip import LikelihoodModel, OipError, TotalsCollector
from mleops.serving.process import OipServer, free_port, port_free
from mleops.serving.service import LikelihoodService, ServingError, stage_fleet, stage_model

MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
KEYS = np.array(["3", "17", "3", "29", "8", "17"], dtype=object)
X = np.array([0.5, 2.0, 7.5, 1.0, 3.3, 0.25])


@pytest.fixture(scope="module")
def fleet_fit():
    rng = np.random.default_rng(0)
    K, n = 30, 120
    keys = np.repeat(np.arange(K), n)  # integer store ids: matched as strings
    x = rng.gamma(2.0, np.repeat(rng.uniform(1, 3, K), n))
    keys[:n - 3] = 29  # store 0 keeps 3 rows: too few to fit (no usable estimate)
    f = mleops.fit_fleet(pd.DataFrame({"store": keys, "x": x}), "gamma", key="store",
                         column="x", min_rows=5)
    return f, mleops.fit(x, "gamma")


@pytest.fixture(scope="module")
def fleet_art(fleet_fit):
    return FleetArtifact.from_fleet(fleet_fit[0])


@pytest.fixture(scope="module")
def fleet_dir(fleet_art, tmp_path_factory):
    return stage_fleet(fleet_art, str(tmp_path_factory.mktemp("fleet")), name="stores",
                       version="3")


@pytest.fixture(scope="module")
def svc(fleet_dir):
    s = LikelihoodService(fleet_dir, limits=Limits(max_rows=1000))
    s.load()
    return s


@pytest.fixture(scope="module")
def model(svc):
    return LikelihoodModel(svc)


def key_input(values, name="store", datatype="BYTES", shape=None):
    return InferInput(name, shape or [len(values)], datatype, data=list(values))


def x_input(values, name="x"):
    return InferInput(name, [len(values)], "FP64", data=[float(v) for v in values])


def request(*inputs, **params):
    return InferRequest("stores", infer_inputs=list(inputs), parameters=params or None)


def per_row(art, keys):
    return art.params[art.rows_of([np.asarray(keys, dtype=object)])]


# --- the service ----------------------------------------------------------------------------
def test_the_service_detects_a_fleet_and_scores_rows_of_many_keys_in_one_call(svc, fleet_art):
    assert svc.fleet is not None and svc.artifact is None
    assert (svc.model_name, svc.model_version, svc.key_names) == ("stores", "3", ["store"])
    before = svc.snapshot()
    ll, cols = svc.evaluate(X, None, "loglik", keys=[KEYS])
    assert cols == ["loglik"]
    np.testing.assert_array_equal(ll, fleet_art.loglik_rows(X, [KEYS]))
    after = svc.snapshot()
    assert (after.requests - before.requests, after.rows - before.rows) == (1, len(X))
    assert after.loglik_sum - before.loglik_sum == pytest.approx(ll.sum(), rel=1e-12)
    ll2, _ = svc.evaluate(X[:, None], ["x"], keys={"store": KEYS})  # by name, [n, 1]
    np.testing.assert_array_equal(ll2, ll)


def test_cdf_sf_and_quantiles_are_per_row_under_each_key(svc, fleet_art):
    fam, P = get_family(fleet_art.family), per_row(fleet_art, KEYS)
    want = np.array([float(fam.cdf(x, p)) for x, p in zip(X, P)])
    cdf, cols = svc.evaluate(X, None, "cdf", keys=[KEYS])
    assert cols == ["cdf"]
    np.testing.assert_allclose(cdf, want, rtol=1e-12, atol=1e-14)
    sf, _ = svc.evaluate(X, None, "sf", keys=[KEYS])
    np.testing.assert_allclose(sf, 1.0 - want, rtol=1e-12, atol=1e-14)
    q, cols = svc.evaluate(X, None, "quantiles", [0.1, 0.9], keys=[KEYS])
    assert cols == ["q0.1", "q0.9"] and q.shape == (len(X), 2)
    for i, p in enumerate(P):
        np.testing.assert_allclose(q[i], np.asarray(fam.ppf(np.array([0.1, 0.9]), p)),
                                   rtol=1e-10)


@pytest.mark.parametrize("keys,status,message", [
    (None, 400, "this model is a fleet keyed by ['store']"),
    ([np.array(["3", "nope", "3", "1", "2", "4"], dtype=object)], 400, "'nope' is not in"),
    ([np.array(["3", "0", "3", "1", "2", "4"], dtype=object)], 400, "no usable estimate"),
    ([np.array(["3", "", "3", "1", "2", "4"], dtype=object)], 400, "empty key"),
    ([np.array(["3", "17"], dtype=object)], 400, "has 2 row(s) but x has 6"),
    ([np.array([f"k{i}" for i in range(10**6)], dtype=object)], 413, "the limit is 1000"),
    ([KEYS, KEYS], 400, "got 2 key column(s)"),
], ids=["no-keys", "unknown", "unfitted", "empty", "length", "million", "columns"])
def test_bad_keys_are_4xx_counted_as_rejected(svc, keys, status, message):
    before = svc.snapshot()
    with pytest.raises(ServingError) as e:
        svc.evaluate(X, None, "loglik", keys=keys)
    assert e.value.status == status and message in str(e.value), str(e.value)
    after = svc.snapshot()
    assert after.rejected - before.rejected == 1 and after.requests == before.requests
    assert svc.evaluate(X, None, keys=[KEYS])[0].shape == (6,)  # still serving


def test_stage_fleet_replaces_a_model_staged_before_and_a_local_dir_resolves(fleet_art,
                                                                            tmp_path):
    x = np.random.default_rng(2).gamma(2.0, 1.0, 200)
    stage_model(ModelArtifact.from_fit(mleops.fit(x, "gamma")), str(tmp_path), name="m",
                version="1")
    assert stage_fleet(fleet_art, str(tmp_path), name="m", version="2") == str(tmp_path)
    assert not (tmp_path / FILENAME).exists() and (tmp_path / HEADER).exists()
    assert json.loads((tmp_path / "serving.json").read_text()) == {"name": "m", "version": "2"}
    assert resolve_model_dir(str(tmp_path)) == str(tmp_path)
    stage_model(ModelArtifact.from_fit(mleops.fit(x, "gamma")), str(tmp_path), name="m",
                version="3")  # and back: a model again, no fleet left to shadow it
    assert not (tmp_path / HEADER).exists()
    s = LikelihoodService(str(tmp_path))
    s.load()
    assert s.fleet is None and s.key_names == []
    with pytest.raises(ServingError, match="not a fleet"):
        s.evaluate(x[:3], None, keys=[KEYS[:3]])


def test_a_pooled_fleet_answers_unknown_keys_with_its_pooled_fit(fleet_fit, tmp_path):
    f, pooled = fleet_fit
    art = FleetArtifact.from_fleet(f, pooled=pooled, unknown_key="pooled")
    s = LikelihoodService(stage_fleet(art, str(tmp_path), name="p", version="1"))
    s.load()
    keys = np.array(["nope", "3", "0"], dtype=object)  # unknown, fitted, unfitted
    ll, _ = s.evaluate(np.array([2.0, 2.0, 2.0]), None, keys=[keys])
    alone = ModelArtifact.from_fit(pooled).loglik_rows([2.0])[0]
    assert ll[0] == pytest.approx(alone, rel=1e-12) and ll[2] == ll[0] != ll[1]


def test_serve_takes_one_of_model_uri_and_model_dir(fleet_dir):
    from click.testing import CliRunner

    from mleops.cli.serve import serve_cmd

    for args in ([], ["--model-uri", fleet_dir, "--model-dir", fleet_dir]):
        r = CliRunner().invoke(serve_cmd, args)
        assert r.exit_code == 2 and "one of --model-uri and --model-dir" in r.output


# --- the KServe model object -----------------------------------------------------------------
def test_oip_requests_with_string_bytes_and_integer_keys(model, fleet_art):
    want = fleet_art.loglik_rows(X, [KEYS])
    r = model.predict(request(key_input(KEYS), x_input(X)))
    (out,) = r.outputs
    assert out.name == "loglik" and r.model_name == "stores" and r.model_version == "3"
    np.testing.assert_array_equal(np.asarray(out.data), want)
    as_bytes = key_input([k.encode() for k in KEYS], shape=[len(KEYS), 1])  # gRPC contents
    out = model.predict(request(x_input(X), as_bytes)).outputs[0]
    np.testing.assert_array_equal(np.asarray(out.data), want)
    raw = InferInput("store", [len(KEYS)], "BYTES")  # raw bytes (length-prefixed)
    raw.set_data_from_numpy(np.array([k.encode() for k in KEYS], dtype=object))
    assert raw.data is None
    np.testing.assert_array_equal(
        np.asarray(model.predict(request(raw, x_input(X))).outputs[0].data), want)
    ints = key_input([int(k) for k in KEYS], datatype="INT64")  # decimal strings
    np.testing.assert_array_equal(
        np.asarray(model.predict(request(ints, x_input(X))).outputs[0].data), want)
    q = model.predict(request(key_input(KEYS), x_input(X), output="quantiles",
                              quantiles=[0.5])).outputs[0]
    assert q.shape == [len(X), 1] and q.parameters == {"levels": "0.5"}


def test_metadata_lists_the_key_tensor_as_bytes(model):
    assert model.get_input_types()[:2] == [
        {"name": "store", "datatype": "BYTES", "shape": [-1]},
        {"name": "x", "datatype": "FP64", "shape": [-1]}]


MILLION = InferInput("store", [10**6], "BYTES", data=None)  # refused on its shape alone


@pytest.mark.parametrize("inputs,status,message", [
    ([key_input(["3", "nope"]), x_input([1.0, 2.0])], 400, "'nope' is not in this fleet"),
    ([x_input([1.0, 2.0])], 400, "request lacks key input(s) ['store']"),
    ([key_input(["3", "17"])], 400, "request lacks input(s) ['x']"),
    ([key_input(["3", ""]), x_input([1.0, 2.0])], 400, "empty key"),
    ([key_input([3.0, 17.0], datatype="FP64"), x_input([1.0, 2.0])], 400,
     "datatype FP64; keys are BYTES"),
    ([key_input([3, 17]), x_input([1.0, 2.0])], 400, "(BYTES) holds int 3"),
    ([key_input([3.5, 17], datatype="INT64"), x_input([1.0, 2.0])], 400, "holds float 3.5"),
    ([MILLION, x_input([1.0])], 413, "has 1000000 rows; the limit is 1000"),
    ([key_input(["3", "17", "3"]), x_input([1.0, 2.0])], 400,
     "different row counts: store=3, x=2"),
    ([key_input(["3"], shape=[2]), x_input([1.0, 2.0])], 400, "but 1 value(s)"),
    ([key_input(["3", "17"]), x_input([1.0, -2.0])], 400, "outside the support"),
    ([key_input(["3"]), x_input([1.0]), key_input(["4"], name="shop")], 400,
     "unknown input(s) ['shop']"),
], ids=["unknown", "no-key", "no-x", "empty", "fp64", "bytes-int", "int-float", "million",
        "rows", "shape", "support", "extra"])
def test_oip_refusals_are_4xx_counted_as_rejected(model, svc, inputs, status, message):
    before = svc.snapshot()
    with pytest.raises(OipError) as e:
        model.predict(request(*inputs))
    assert e.value.status == status and message in str(e.value.reason), e.value.reason
    after = svc.snapshot()
    assert after.rejected - before.rejected == 1 and after.rows == before.rows
    assert model.predict(request(key_input(["3"]), x_input([1.0]))).outputs[0].data


def test_metrics_are_per_fleet_not_per_key(svc):
    families = list(TotalsCollector(svc).collect())
    for m in families:
        for sample in m.samples:
            assert sample.labels == {"registered_model": "stores", "registered_version": "3"}
    rows = next(m for m in families if m.name == "mleops_rows").samples[0].value
    assert rows == svc.snapshot().rows


# --- a real ModelServer process --------------------------------------------------------------
def infer_rest(server, body):
    return http_send(server.http_port, "POST", "/v2/models/stores/infer", body,
                     {"Content-Type": "application/json"})


@pytest.mark.slow
def test_a_real_v2_server_answers_rows_of_many_keys(fleet_dir, fleet_art, tmp_path):
    keys = [f"{k}" for k in (3, 17, 29, 8, 3, 12, 17)]
    x = [0.5, 2.0, 7.5, 1.0, 3.3, 0.25, 4.0]
    want = fleet_art.loglik_rows(np.array(x), [np.array(keys, dtype=object)])
    body = {"inputs": [{"name": "store", "datatype": "BYTES", "shape": [len(keys)],
                        "data": keys},
                       {"name": "x", "datatype": "FP64", "shape": [len(x)], "data": x}]}
    with OipServer(fleet_dir, max_rows=500, log_path=str(tmp_path / "oip.log")) as server:
        status, meta = http_send(server.http_port, "GET", "/v2/models/stores", b"", {})
        assert status == 200 and meta["inputs"][0] == {"name": "store", "datatype": "BYTES",
                                                       "shape": [-1]}
        status, out = infer_rest(server, body)
        assert status == 200, out
        assert out["model_name"] == "stores" and out["model_version"] == "3"
        np.testing.assert_allclose(out["outputs"][0]["data"], want, rtol=0, atol=1e-12)
        bad = {"inputs": [{**body["inputs"][0], "data": ["3", "nope", *keys[2:]]},
                          body["inputs"][1]]}
        status, err = infer_rest(server, bad)
        assert status == 400 and "'nope'" in err["error"], err
        status, err = infer_rest(server, {"inputs": [body["inputs"][1]]})
        assert status == 400 and "lacks key input(s) ['store']" in err["error"], err
        status, out = infer_rest(server, body)  # still serving, same answer
        assert status == 200
        np.testing.assert_allclose(out["outputs"][0]["data"], want, rtol=0, atol=1e-12)
        with grpc.insecure_channel(server.grpc_target) as channel:  # bytes over gRPC
            r = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pb.ModelInferRequest(
                model_name="stores", inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="store", datatype="BYTES", shape=[len(keys)],
                        contents=pb.InferTensorContents(
                            bytes_contents=[k.encode() for k in keys])),
                    pb.ModelInferRequest.InferInputTensor(
                        name="x", datatype="FP64", shape=[len(x)],
                        contents=pb.InferTensorContents(fp64_contents=x))]), timeout=30)
        np.testing.assert_allclose(list(r.outputs[0].contents.fp64_contents), want, rtol=0,
                                   atol=1e-12)
        text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
        values = {line.split("{", 1)[0]: (line.split("{", 1)[1].split("}")[0],
                                          float(line.rsplit(" ", 1)[1]))
                  for line in text.splitlines() if line.startswith("mleops_")}
        assert {labels for labels, _ in values.values()} == {
            'registered_model="stores",registered_version="3"'}
        assert values["mleops_rows_total"][1] == 3 * len(x)
        assert values["mleops_rejected_requests_total"][1] == 2
        assert values["mleops_loglik_sum"][1] == pytest.approx(3 * want.sum(), rel=1e-12)


@pytest.mark.slow
def test_mleops_serve_a_registered_fleet_version(fleet_art, mlflow_server, tmp_path,
                                                 monkeypatch):  # noqa: F811
    from mleops.registry import Registry

    monkeypatch.setenv("HOME", str(tmp_path))  # the staging cache of `mleops serve`
    reg = Registry(mlflow_server, retries=2, backoff=0.1)
    name = f"fleet-serving-{os.getpid()}"
    run_id = reg.log_fleet_run(experiment="fleet-serving", params={}, metrics={},
                               fleet=fleet_art, registered=True)
    assert reg.run_tags(run_id)["mleops.kind"] == "fleet"
    version = reg.register(name, run_id, tags={})
    for uri in (f"models:/{name}@champion", f"models:/{name}/{version}"):
        d = resolve_model_dir(uri, tracking_uri=mlflow_server,
                              stage_root=str(tmp_path / "stage"))
        assert os.path.exists(os.path.join(d, HEADER))
        assert not os.path.exists(os.path.join(d, FILENAME))
        assert json.loads(open(os.path.join(d, "serving.json")).read()) == {
            "name": name, "version": version}
    port = free_port()
    proc = subprocess.Popen([MLEOPS, "serve", "--protocol", "v2", "--model-uri",
                             f"models:/{name}@champion", "--tracking-uri", mlflow_server,
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ})
    try:
        info = json.loads(proc.stdout.readline())
        assert info["protocol"] == "v2" and os.path.exists(
            os.path.join(info["model_dir"], HEADER))
        status, out = http_send(port, "POST", f"/v2/models/{name}/infer", {"inputs": [
            {"name": "store", "datatype": "BYTES", "shape": [3], "data": ["3", "17", "29"]},
            {"name": "x", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0, 3.0]}]},
            {"Content-Type": "application/json"})
        assert status == 200 and out["model_version"] == version, out
        want = fleet_art.loglik_rows(np.array([1.0, 2.0, 3.0]),
                                     [np.array(["3", "17", "29"], dtype=object)])
        np.testing.assert_allclose(out["outputs"][0]["data"], want, rtol=0, atol=1e-12)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    port_free("127.0.0.1", port)


@pytest.mark.slow
def test_mleops_serve_v2_a_local_fleet_dir(fleet_dir, fleet_art):
    port = free_port()
    proc = subprocess.Popen([MLEOPS, "serve", "--protocol", "v2", "--model-dir", fleet_dir,
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["model_dir"] == fleet_dir and info["protocol"] == "v2"
        keys = ["8", "3", "12"]
        status, out = http_send(port, "POST", "/v2/models/stores/infer", {"inputs": [
            {"name": "store", "datatype": "BYTES", "shape": [3, 1], "data": [[k] for k in keys]},
            {"name": "x", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0, 3.0]}],
            "parameters": {"output": "cdf"}}, {"Content-Type": "application/json"})
        assert status == 200 and out["outputs"][0]["name"] == "cdf", out
        fam, P = get_family(fleet_art.family), per_row(fleet_art, keys)
        want = [float(fam.cdf(x, p)) for x, p in zip([1.0, 2.0, 3.0], P)]
        np.testing.assert_allclose(out["outputs"][0]["data"], want, rtol=1e-12)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    port_free("127.0.0.1", port)
