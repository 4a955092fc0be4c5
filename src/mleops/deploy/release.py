"""The manifest serving a release (a version, plus an optional canary) on either target: the
one policy ``mleops deploy render`` and the pipeline's deploy step share."""

from __future__ import annotations

import os

from mleops.deploy.kserve import render_inference_service, validate_inference_service
from mleops.deploy.seldon import model_artifact_uri, render_seldon_deployment, validate_manifest
from mleops.errors import DataError

#: target -> (render, validate); both take the same release arguments
TARGETS = {"seldon": (render_seldon_deployment, validate_manifest),
           "kserve": (render_inference_service, validate_inference_service)}


def release_manifest(registry, name: str, *, model_name: str, version: str,
                     model_uri: str | None = None, canary_version: str | None = None,
                     canary_model_uri: str | None = None,
                     artifacts_destination: str | None = None,
                     crd: str | os.PathLike | None = None, validate: bool = True,
                     target: str = "seldon", **render_options) -> dict:
    """The validated manifest (SeldonDeployment, or InferenceService for ``target``
    "kserve") serving ``version`` (and a canary).

    Model URIs not given are looked up in ``registry`` (mapped through
    ``artifacts_destination``); the manifest is always checked against the CRD (the package
    ships it) unless ``validate`` is False.
    """
    if target not in TARGETS:
        raise DataError(f"deploy target {target!r} is not one of {sorted(TARGETS)}")
    render, check = TARGETS[target]

    def uri(v: str) -> str:
        return model_artifact_uri(registry, model_name, v,
                                  artifacts_destination=artifacts_destination)

    if model_uri is None:
        model_uri = uri(version)
    if canary_version is not None and canary_model_uri is None:
        canary_model_uri = uri(canary_version)
    manifest = render(name, model_name=model_name, version=version, model_uri=model_uri,
                      canary_version=canary_version, canary_model_uri=canary_model_uri,
                      **render_options)
    if validate:
        check(manifest, crd)
    return manifest


__all__ = ["TARGETS", "release_manifest"]
