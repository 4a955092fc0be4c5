"""Deploying to Kubernetes: manifests (SeldonDeployment, InferenceService, JAXJob, TrainJob),
validation, apply, traffic, submitting a TrainJob and waiting for it.

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
    update_object,
)
from mleops.deploy.configmap import read_configmap, write_configmap
from mleops.deploy.endpoints import ready_endpoints
from mleops.deploy.fleet_canary import render_fleet_canary, routing_configmap, routing_document
from mleops.deploy.jaxjob import render_jaxjob, validate_jaxjob
from mleops.deploy.k8s import Resource, check_object, crd_schema, find_crd, to_yaml
from mleops.deploy.kserve import ISVC, render_inference_service, validate_inference_service
from mleops.deploy.release import TARGETS, release_manifest
from mleops.deploy.seldon import (
    CANARY,
    MAIN,
    SELDON,
    default_crd_path,
    deployment_name,
    model_artifact_uri,
    render_seldon_deployment,
    validate_manifest,
)
from mleops.deploy.trainjob import (
    TRAINJOB,
    create_trainjob,
    render_trainjob,
    submit_and_wait,
    validate_trainjob,
)

__all__ = ["CANARY", "IMAGE", "ISVC", "MAIN", "SELDON", "SERVER_IMAGE", "TARGETS", "TRAINJOB",
           "DeployError", "Resource", "apply_manifest", "check_object", "create_trainjob",
           "crd_schema", "custom_objects_api", "default_crd_path", "deployment_name",
           "find_crd", "get_object", "get_traffic", "model_artifact_uri", "patch_object",
           "read_configmap", "ready_endpoints", "release_manifest", "render_fleet_canary", "render_inference_service", "render_jaxjob",
           "render_seldon_deployment", "render_trainjob", "routing_configmap", "routing_document",
           "set_traffic", "submit_and_wait",
           "to_yaml", "update_object", "validate_inference_service", "validate_jaxjob",
           "validate_manifest", "validate_trainjob", "write_configmap"]
