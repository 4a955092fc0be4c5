"""Model directories: where a server finds ``model.json``, staged from the registry if need be."""

from __future__ import annotations

import os

from mleops.errors import DataError


def resolve_model_dir(model_uri: str, *, tracking_uri: str = "", stage_root: str = "") -> str:
    """A local directory with model.json: as given, or staged from ``models:/NAME@alias``
    (or ``models:/NAME/VERSION``) the way Seldon's storage initializer fills /mnt/models."""
    if not model_uri.startswith("models:/"):
        path = model_uri[len("file://"):] if model_uri.startswith("file://") else model_uri
        if not os.path.exists(os.path.join(path, "model.json")):
            raise DataError(f"no model.json in {path}")
        return path
    from mleops.registry import Registry
    from mleops.serving.service import stage_model

    ref = model_uri[len("models:/"):]
    reg = Registry(tracking_uri or None)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        found = reg.load_alias(name, alias)
    else:
        name, _, version = ref.partition("/")
        found = reg.load_version(name, version) if version else None
    if found is None:
        raise DataError(f"{model_uri}: no such registered model version")
    version, art = found
    target = os.path.join(stage_root or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "mleops", "models"), name, str(version))
    stage_model(art, target, name=name, version=str(version))
    return target


__all__ = ["resolve_model_dir"]
