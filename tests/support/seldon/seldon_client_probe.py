"""seldon-core's own SeldonClient against a v1 server, run with the serving environment's
python (seldon-core pins numpy<2 and protobuf<4, so it cannot load in the main environment).
``python seldon_client_probe.py HOST:HTTP_PORT HOST:GRPC_PORT`` prints one JSON object: for
each call, whether it succeeded, the message and the response as JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from google.protobuf.json_format import MessageToDict
from seldon_core.seldon_client import SeldonClient

X = np.array([[1.0], [2.0], [4.0]])


def answer(r) -> dict:
    body = r.response
    if body is not None and not isinstance(body, dict):
        body = MessageToDict(body)
    return {"success": r.success, "msg": r.msg, "response": body}


def main(rest: str, grpc: str) -> dict:
    c = SeldonClient()
    out: dict = {}
    for transport, endpoint in (("rest", rest), ("grpc", grpc)):
        for payload in ("ndarray", "tensor"):
            out[f"{transport}-{payload}"] = answer(c.microservice(
                data=X, transport=transport, microservice_endpoint=endpoint,
                method="predict", payload_type=payload))
    for case, kw in (("outside-support", {"data": np.array([[-1.0]])}),
                     ("two-columns", {"data": np.array([[1.0, 2.0]])}),
                     ("json-data", {"json_data": {"x": [1.0, 2.0]}})):
        out[f"grpc-{case}"] = answer(c.microservice(
            transport="grpc", microservice_endpoint=grpc, method="predict", **kw))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
