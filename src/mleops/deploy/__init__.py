"""Deploying registered models with Seldon Core v1: manifests, validation, apply, traffic.

Importing this package is cheap: the kubernetes client, MLflow, PyYAML and jsonschema are
imported only by the functions that need them.
"""

from .apply import DeployError, apply_manifest, custom_objects_api, get_traffic, set_traffic
from .jaxjob import render_jaxjob, validate_jaxjob
from .manifest import (
    CANARY,
    MAIN,
    SERVER_IMAGE,
    crd_schema,
    default_crd_path,
    deployment_name,
    model_artifact_uri,
    render_seldon_deployment,
    to_yaml,
    validate_manifest,
)

__all__ = ["CANARY", "MAIN", "SERVER_IMAGE", "DeployError", "apply_manifest", "crd_schema",
           "custom_objects_api", "default_crd_path", "deployment_name", "get_traffic", "model_artifact_uri",
           "render_jaxjob", "render_seldon_deployment", "set_traffic", "to_yaml",
           "validate_jaxjob", "validate_manifest"]
