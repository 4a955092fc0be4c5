"""The v2 server driven by clients nobody here wrote: NVIDIA's tritonclient (HTTP and gRPC),
KServe's own InferenceRESTClient / InferenceGRPCClient, and schemathesis generating requests
from the Open Inference Protocol REST spec (vendored in tests/support/oip). Our own client
and tests share our reading of the protocol; these do not. Every answer must be a 2xx or a
documented 4xx, never a 5xx, with the server still serving after.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as thttp
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.openapi import from_dict
from support.http import send

from mleops.serving.client import infer, oip_request
from mleops.serving.process import OipServer

pytestmark = pytest.mark.slow
SPEC = Path(__file__).parents[1] / "support" / "oip" / "open_inference_rest.yaml"
X = [1.0, 2.0, 4.0]  # integers too: the INT64 tensors carry them exactly
DTYPES = [("FP64", np.float64), ("FP32", np.float32), ("INT64", np.int64)]
SHAPES = [[3], [3, 1]]
BINARY_REFUSAL = "binary tensor data extension (Inference-Header-Content-Length) is not"
TRITON_GRPC = SPEC.parent / "triton_grpc_client.py"  # its own process: see its docstring


@pytest.fixture(scope="module")
def server(gamma_model, tmp_path_factory) -> Iterator[OipServer]:
    log = tmp_path_factory.mktemp("logs") / "oip.log"
    with OipServer(gamma_model[1], max_rows=200, max_body_bytes=64_000,
                   log_path=str(log)) as s:
        yield s


def want(gamma_model, values: list[float]) -> np.ndarray:
    return gamma_model[0].loglik_rows(np.asarray(values, float))


def assert_still_serving(server: OipServer) -> None:
    status, body = infer(server.url, "latency", oip_request([1.5]))
    assert status == 200 and np.isfinite(body["outputs"][0]["data"]).all(), body


def triton_input(dtype: str, np_type: type, shape: list[int], values=X, binary: bool = False):
    inp = thttp.InferInput("x", shape, dtype)
    inp.set_data_from_numpy(np.asarray(values, dtype=np_type).reshape(shape), binary_data=binary)
    return inp


# --- tritonclient ---------------------------------------------------------------------------
def test_tritonclient_http_health_and_metadata(server):
    c = thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("latency") and c.is_model_ready("latency", "7")
    meta = c.get_model_metadata("latency", "7")
    assert meta["name"] == "latency" and meta["versions"] == ["7"], meta
    assert [i["name"] for i in meta["inputs"]] == ["x", "event"]
    assert [o["name"] for o in meta["outputs"]] == ["loglik", "cdf", "sf", "quantiles"]
    assert c.get_server_metadata()["extensions"] == []  # none it would not serve
    c.close()


@pytest.mark.parametrize("shape", SHAPES, ids=["n", "n1"])
@pytest.mark.parametrize("dtype,np_type", DTYPES, ids=[d[0] for d in DTYPES])
def test_tritonclient_http_infer_echoes_the_id(server, gamma_model, dtype, np_type, shape):
    """No Content-Type (tritonclient sends none) and binary outputs asked for by default."""
    c = thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    r = c.infer("latency", [triton_input(dtype, np_type, shape)], model_version="7",
                request_id="req-42", parameters={"output": "loglik"})
    assert r.get_response()["id"] == "req-42" and r.get_response()["model_version"] == "7"
    np.testing.assert_allclose(r.as_numpy("loglik"), want(gamma_model, X), rtol=1e-9)
    if (dtype, shape) == ("FP64", [3, 1]):  # once: a quantiles answer takes ~2 s here
        q = c.infer("latency", [triton_input(dtype, np_type, shape)],
                    outputs=[thttp.InferRequestedOutput("quantiles", binary_data=True)],
                    parameters={"output": "quantiles", "quantiles": "0.1,0.9"})
        assert q.as_numpy("quantiles").shape == (3, 2)
    c.close()


def test_tritonclient_http_binary_bytes_and_support_refusals(server):
    c = thttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    cases = [  # (input, status, message)
        (triton_input("FP64", np.float64, [3], binary=True), "415", BINARY_REFUSAL),
        (triton_input("BYTES", object, [1], values=[b"1.5"]), "400", "numeric tensors only"),
        (triton_input("FP64", np.float64, [1], values=[-1.0]), "400", "outside the support"),
    ]
    for inp, status, message in cases:
        with pytest.raises(thttp.InferenceServerException) as e:
            c.infer("latency", [inp])
        assert e.value.status() == status and message in e.value.message(), e.value
    c.close()
    assert_still_serving(server)


def test_tritonclient_grpc_raw_tensors(server, gamma_model):
    """tritonclient sends raw_input_contents and reads only raw_output_contents."""
    run = subprocess.run([sys.executable, str(TRITON_GRPC), server.grpc_target],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server"].get("extensions", []) == []
    assert got["model"]["versions"] == ["7"] and got["model"]["name"] == "latency"
    assert len(got["infer"]) == len(DTYPES) * len(SHAPES)
    for case, r in got["infer"].items():
        assert r["response"]["id"] == "req-42" and r["response"]["model_version"] == "7", case
        np.testing.assert_allclose(r["loglik"], want(gamma_model, X), rtol=1e-9)
    assert got["quantiles_shape"] == [3, 2]
    for case, message in (("bytes", "numeric tensors only"), ("support", "outside the support")):
        status, text = got["refused"][case]
        assert status == "StatusCode.INVALID_ARGUMENT" and message in text, (case, text)
    assert_still_serving(server)


def test_what_the_clients_found_stays_fixed(server):
    """Each a finding above, pinned without a third-party client in the way."""
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.5]}]}
    status, doc = send(server.http_port, "POST", "/v2/models/latency/infer", body)
    assert status == 200 and "parameters" not in doc, doc  # no Content-Type, no Origin
    assert "parameters" not in doc["outputs"][0]  # null is not the spec's object
    assert send(server.http_port, "GET", "/v2/") == (200, {
        "name": "kserve", "version": send(server.http_port, "GET", "/v2")[1]["version"],
        "extensions": []})
    status, doc = send(server.http_port, "POST", "/v2/models/latency/infer", body,
                       {"Origin": "http://evil.example"})  # a browser's cross-site post
    assert status == 415 and "Content-Type header missing" in doc["error"], doc


# --- KServe's own clients -------------------------------------------------------------------
def kserve_request(dtype: str, np_type: type, shape: list[int], binary: bool,
                   output: str = "cdf") -> InferRequest:
    inp = InferInput("x", shape, dtype)
    inp.set_data_from_numpy(np.asarray(X, np_type).reshape(shape), binary_data=binary)
    return InferRequest("latency", [inp], request_id="rid-7", parameters={"output": output})


async def kserve_rest(server: OipServer, gamma_model) -> None:
    base = server.url
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as c:
        assert await c.is_server_live(base) and await c.is_server_ready(base)
        assert await c.is_model_ready(base, "latency")
        for dtype, np_type in DTYPES[:2]:
            for shape in SHAPES:
                r = await c.infer(base, kserve_request(dtype, np_type, shape, False),
                                  model_name="latency")
                assert r.id == "rid-7" and r.outputs[0].name == "cdf"
                np.testing.assert_allclose(r.outputs[0].as_numpy(),
                                           gamma_model[0].cdf(np.array(X)), rtol=1e-9)
        with pytest.raises(Exception, match="415") as e:  # httpx.HTTPStatusError
            await c.infer(base, kserve_request("FP64", np.float64, [3], True),
                          model_name="latency")
        assert BINARY_REFUSAL in str(e.value)


async def kserve_grpc(server: OipServer, gamma_model) -> None:
    async with InferenceGRPCClient(server.grpc_target) as c:
        assert await c.is_server_live() and await c.is_server_ready()
        assert await c.is_model_ready("latency")
        for dtype, np_type in DTYPES[:2]:
            for shape in SHAPES:
                for binary in (False, True):  # typed contents, raw_input_contents
                    r = await c.infer(kserve_request(dtype, np_type, shape, binary, "sf"))
                    assert r.id == "rid-7" and r.outputs[0].name == "sf"
                    np.testing.assert_allclose(r.outputs[0].as_numpy(),
                                               1 - gamma_model[0].cdf(np.array(X)),
                                               rtol=1e-9)


@pytest.mark.parametrize("run", [kserve_rest, kserve_grpc], ids=["rest", "grpc"])
def test_kserve_clients(server, gamma_model, run):
    asyncio.run(run(server, gamma_model))
    assert_still_serving(server)


# --- schemathesis against the OIP REST spec -------------------------------------------------
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def spec(narrow: bool) -> dict:
    """The vendored spec, its ``${MODEL_NAME}`` path templates as OpenAPI spells them
    (``{MODEL_NAME}``); ``narrow``: inputs this model takes (``x``, numeric, up to 3 rows),
    so the generated requests reach the model and its 200 answers are checked too."""
    raw = yaml.safe_load(SPEC.read_text())
    raw["paths"] = {k.replace("$", ""): v for k, v in raw["paths"].items()}
    if narrow:
        schemas = raw["components"]["schemas"]
        schemas["request_parameters"] = {"type": "object", "additionalProperties": False,
                                         "properties": {"output": {"type": "string", "enum": [
                                             "loglik", "cdf", "sf"]}}}
        for name in ("inference_request", "request_input"):
            schemas[name]["properties"]["parameters"] = {
                "$ref": "#/components/schemas/request_parameters"}
        schemas["request_input"]["properties"].update(
            name={"type": "string", "enum": ["x"]},
            datatype={"type": "string", "enum": ["FP64", "FP32", "INT64", "BYTES"]},
            shape={"type": "array", "enum": [[3], [3, 1]]},
            data={"type": "array", "minItems": 3, "maxItems": 3, "items": {
                "type": "number", "minimum": 0.01, "maximum": 50}})
        schemas["inference_request"]["properties"]["inputs"].update(minItems=1, maxItems=1)
        infer = raw["paths"]["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]
        infer["post"]["requestBody"]["required"] = True
    return raw


@pytest.mark.parametrize("narrow,mode,examples", [
    (False, GenerationMode.POSITIVE, 40), (False, GenerationMode.NEGATIVE, 40),
    (True, GenerationMode.POSITIVE, 60)], ids=["spec", "negative", "model-inputs"])
def test_schemathesis_finds_no_5xx_and_no_off_spec_answer(server, narrow, mode, examples):
    schema = from_dict(spec(narrow))
    schema.config.update(base_url=server.url)
    seen: dict[int, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        fixed = {"MODEL_NAME": "latency", "MODEL_VERSION": "7"} if op.path_parameters else None
        if (narrow or mode is GenerationMode.NEGATIVE) and op.method.upper() != "POST":
            continue  # nothing to narrow, and nothing to negate, in a bare GET

        @given(case=op.as_strategy(generation_mode=mode, path_parameters=fixed))
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(
                      HealthCheck))
        def run(case):
            response = case.call(timeout=30)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            case.validate_response(response, checks=CHECKS)

        run()
    assert seen and max(seen) < 500, seen
    if narrow:
        assert seen.get(200), seen  # the model answered some, and those answers conform
    assert_still_serving(server)
    assert send(server.http_port, "GET", "/v2/health/live")[0] == 200
