"""Kubernetes API doubles: what runs here in place of an API server (tested by contract)."""

from __future__ import annotations

import copy

#: the SeldonDeployment coordinates every CustomObjectsApi call carries
REF = dict(group="machinelearning.seldon.io", version="v1", namespace="models",
           plural="seldondeployments")


class RecordingApi:
    """CustomObjectsApi double: records each call's keyword arguments; answers each method from
    its queue of return values (an exception in the queue is raised)."""

    METHODS = ("get_namespaced_custom_object", "create_namespaced_custom_object",
               "patch_namespaced_custom_object")

    def __init__(self, **answers):
        self.calls, self.answers = [], {k: list(v) for k, v in answers.items()}

    def __getattr__(self, method):
        if method not in self.METHODS:
            raise AttributeError(method)

        def call(*args, **kwargs):
            assert not args, "the kubernetes client is called with keywords only"
            self.calls.append((method, copy.deepcopy(kwargs)))
            answer = self.answers[method].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call
