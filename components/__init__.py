"""Thin Kubeflow Pipelines v2 components over :mod:`mleops.pipeline.steps`."""
