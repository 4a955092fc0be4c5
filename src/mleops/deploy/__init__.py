"""Deploying to Kubernetes: manifests (SeldonDeployment, JAXJob), validation, apply, traffic.

Importing this package is cheap: the kubernetes client, MLflow, PyYAML and jsonschema are
imported only by the functions that need them.
"""

from mleops._version import IMAGE, SERVER_IMAGE
from mleops.deploy.apply import (
    DeployError,
    apply_manifest,
    custom_objects_api,
    get_object,
    get_traffic,
    patch_object,
    set_traffic,
)
from mleops.deploy.jaxjob import render_jaxjob, validate_jaxjob
from mleops.deploy.k8s import check_object, crd_schema, find_crd, to_yaml
from mleops.deploy.seldon import (
    CANARY,
    MAIN,
    default_crd_path,
    deployment_name,
    model_artifact_uri,
    release_manifest,
    render_seldon_deployment,
    validate_manifest,
)

__all__ = ["CANARY", "IMAGE", "MAIN", "SERVER_IMAGE", "DeployError", "apply_manifest",
           "check_object", "crd_schema", "custom_objects_api", "default_crd_path",
           "deployment_name", "find_crd", "get_object", "get_traffic", "model_artifact_uri",
           "patch_object", "release_manifest", "render_jaxjob", "render_seldon_deployment",
           "set_traffic", "to_yaml", "validate_jaxjob", "validate_manifest"]
