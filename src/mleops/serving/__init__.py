"""Serving: a protocol-free likelihood service, one adapter per protocol (Seldon), local
server processes, a client, and model directories.

``mleops.serving.seldon`` is what the model-server image imports; it loads no mlflow, kfp,
click or pandas (checked by tests/test_boundaries.py).
"""
