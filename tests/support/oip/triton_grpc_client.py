"""tritonclient's gRPC client against a v2 server, run as its own process: tritonclient.grpc
and kserve both register the ``inference.*`` protobuf messages, and one process's descriptor
pool refuses the second ("duplicate symbol"), so a test session that imports kserve cannot
import tritonclient.grpc. ``python triton_grpc_client.py HOST:PORT`` prints one JSON object.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tg

X = [1.0, 2.0, 4.0]
DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}


def tensor(dtype: str, shape: list[int], values: list) -> tg.InferInput:
    inp = tg.InferInput("x", shape, dtype)
    inp.set_data_from_numpy(np.asarray(values, dtype=DTYPES.get(dtype, object)).reshape(shape))
    return inp


def main(target: str) -> dict:
    c = tg.InferenceServerClient(target)
    out: dict = {"live": c.is_server_live(), "ready": c.is_server_ready(),
                 "model_ready": c.is_model_ready("latency", "7"),
                 "server": c.get_server_metadata(as_json=True),
                 "model": c.get_model_metadata("latency", "7", as_json=True), "infer": {},
                 "refused": {}}
    for dtype in DTYPES:
        for shape in ([3], [3, 1]):
            r = c.infer("latency", [tensor(dtype, shape, X)], model_version="7",
                        request_id="req-42", parameters={"output": "loglik"})
            out["infer"][f"{dtype}{shape}"] = {"response": r.get_response(as_json=True),
                                               "loglik": r.as_numpy("loglik").tolist()}
    q = c.infer("latency", [tensor("FP64", [3, 1], X)],  # once: ~2 s a quantiles answer
                parameters={"output": "quantiles", "quantiles": "0.1,0.9"})
    out["quantiles_shape"] = list(q.as_numpy("quantiles").shape)
    for case, inp in (("bytes", tensor("BYTES", [1], [b"1.5"])),
                      ("support", tensor("FP64", [2, 1], [1.0, -1.0]))):
        try:
            c.infer("latency", [inp])
            out["refused"][case] = None
        except tg.InferenceServerException as e:
            out["refused"][case] = [e.status(), e.message()]
    c.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
