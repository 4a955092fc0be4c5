"""Model directories: where a server finds ``model.json`` (one model) or ``fleet.json`` +
``fleet.parquet`` (a fleet, served as one model), staged from the registry if need be."""

from __future__ import annotations

import os

from mleops.errors import DataError

FLEET_KIND = ("mleops.kind", "fleet")  # the run tag of a version that is a fleet


def resolve_model_dir(model_uri: str, *, tracking_uri: str = "", stage_root: str = "") -> str:
    """A local directory with model.json or fleet.json: as given, or staged from
    ``models:/NAME@alias`` (or ``models:/NAME/VERSION``) the way Seldon's storage
    initializer fills /mnt/models. A registered fleet version (its run tagged
    ``mleops.kind=fleet``) is staged as a fleet directory."""
    if not model_uri.startswith("models:/"):
        path = model_uri[len("file://"):] if model_uri.startswith("file://") else model_uri
        if not any(os.path.exists(os.path.join(path, f)) for f in ("model.json", "fleet.json")):
            raise DataError(f"no model.json (nor a fleet's fleet.json) in {path}")
        return path
    from mleops.registry import Registry, RegistryError
    from mleops.serving.service import stage_fleet, stage_model

    ref = model_uri[len("models:/"):]
    reg = Registry(tracking_uri or None)
    alias = version = None
    if "@" in ref:
        name, alias = ref.split("@", 1)
    else:
        name, _, version = ref.partition("/")
    root = stage_root or os.path.join(os.path.expanduser("~"), ".cache", "mleops", "models")
    fleet = _fleet_version(reg, name, alias=alias, version=version)
    if fleet is not None:
        version, art = fleet
        target = os.path.join(root, name, str(version))
        return stage_fleet(art, target, name=name, version=str(version))
    try:
        if alias is not None:
            found = reg.load_alias(name, alias)
        else:
            found = reg.load_version(name, version) if version else None
    except RegistryError:  # no model.json: a fleet whose run lost its kind tag?
        fleet = _fleet_version(reg, name, alias=alias, version=version, tagged=False)
        if fleet is None:
            raise
        version, art = fleet
        return stage_fleet(art, os.path.join(root, name, str(version)), name=name,
                           version=str(version))
    if found is None:
        raise DataError(f"{model_uri}: no such registered model version")
    version, art = found
    target = os.path.join(root, name, str(version))
    stage_model(art, target, name=name, version=str(version))
    return target


def _fleet_version(reg, name: str, *, alias, version, tagged: bool = True):
    """(version, FleetArtifact) when the version the URI names is a fleet, else None.

    ``tagged``: decide by the run's ``mleops.kind`` tag; otherwise try loading a fleet."""
    from mleops.registry import RegistryError

    if alias is None and not version:
        return None
    versions = reg.list_versions(name)
    v = next((d for d in versions if (alias in d["aliases"] if alias is not None
                                      else d["version"] == str(version))), None)
    if v is None:
        return None  # the model path reports what is missing
    if tagged:
        if reg.run_tags(v["run_id"]).get(FLEET_KIND[0]) != FLEET_KIND[1]:
            return None
        return reg.load_fleet(name, v["version"])
    try:
        return reg.load_fleet(name, v["version"])
    except RegistryError:
        return None


__all__ = ["resolve_model_dir"]
