"""What every Kubernetes manifest mleops renders shares: name rules, CRD schemas, checks.

Each manifest kind (SeldonDeployment, JAXJob, and the next ones) renders its own object and
adds its controller's webhook rules; the name/label/quantity rules and the validation against
the CRD's OpenAPI schema live here once. The CRDs are verbatim copies shipped with the package
(``mleops/deploy/crds/``), so validation needs no source checkout and never silently skips.
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path

from mleops.errors import DataError

DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def check(ok: bool, message: str) -> None:
    if not ok:
        raise DataError(message)


def label_value(what: str, value: str) -> str:
    value = str(value)
    check(bool(value) and len(value) <= 63 and LABEL_VALUE.fullmatch(value) is not None,
           f"{what} {value!r} cannot be a Kubernetes label value (1-63 characters: letters, "
           f"digits, '-', '_', '.', starting and ending with a letter or digit)")
    return value


def check_uri(what: str, uri: str | None) -> str:
    check(isinstance(uri, str) and uri.strip() == uri and uri != "" and " " not in uri,
           f"{what} must be a non-empty URI without spaces, got {uri!r}")
    return uri


def to_yaml(manifest: dict) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def find_crd(env: str, filename: str) -> Path:
    """$``env`` if set, else the package's verbatim copy (``mleops/deploy/crds/<filename>``)."""
    if os.environ.get(env):
        return Path(os.environ[env])
    return Path(str(resources.files("mleops.deploy") / "crds" / filename))


def _to_jsonschema(node, strict: bool):
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema draft 7: ``nullable`` allows
    null, ``x-kubernetes-int-or-string`` means integer or string; with ``strict`` an object with
    ``properties`` rejects other keys (as kubectl's strict field validation does; the server
    would prune them silently) unless it preserves unknown fields or embeds a resource."""
    if isinstance(node, list):
        return [_to_jsonschema(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties", "definitions"):  # maps name -> schema
            out[k] = {name: _to_jsonschema(sub, strict) for name, sub in v.items()}
        elif not k.startswith("x-kubernetes-") and k not in ("nullable", "description"):
            out[k] = _to_jsonschema(v, strict)
    if node.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    open_ = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-embedded-resource")
    if strict and "properties" in node and "additionalProperties" not in node and not open_:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


@functools.lru_cache(maxsize=8)
def _crd_schema(path: str, mtime: float, version: str, strict: bool) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as f:
        crd = yaml.load(f, Loader=loader)
    for v in (crd or {}).get("spec", {}).get("versions", []):
        if v.get("name") == version:
            return _to_jsonschema(v["schema"]["openAPIV3Schema"], strict)
    raise DataError(f"{path}: no version {version!r} in the CRD")


def crd_schema(path: str | os.PathLike, *, version: str, strict: bool = True) -> dict:
    """The JSON schema (draft 7) of the CRD's ``version`` (see ``_to_jsonschema``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CRD not found at {p}")
    return _crd_schema(str(p.resolve()), p.stat().st_mtime, version, strict)


def validate_against_crd(manifest: dict, schema_path: str | os.PathLike | None, *, env: str,
                         filename: str, group: str, version: str, kind: str,
                         name_pattern: re.Pattern, name_rule: str, strict: bool = True) -> None:
    """Kind, name and schema of ``manifest`` against the CRD at ``schema_path`` (default:
    ``find_crd(env, filename)``); DataError names the first failing field."""
    path = Path(schema_path) if schema_path is not None else find_crd(env, filename)
    check(path.is_file(), f"{kind} CRD not found at {path} (set ${env})")
    check_object(manifest, f"{group}/{version}", kind, name_pattern, name_rule,
                 crd_schema(path, version=version, strict=strict))


def check_object(manifest: dict, api_version: str, kind: str, name_pattern: re.Pattern,
                 name_rule: str, schema: dict) -> None:
    """Kind, name and the CRD's schema (shared by every manifest mleops renders); DataError
    names the first failing field as a path."""
    import jsonschema

    check(isinstance(manifest, dict), f"manifest must be a mapping, got {type(manifest).__name__}")
    check(manifest.get("apiVersion") == api_version and manifest.get("kind") == kind,
           f"manifest is {manifest.get('apiVersion')}/{manifest.get('kind')}, not "
           f"{api_version}/{kind}")
    name = (manifest.get("metadata") or {}).get("name")
    check(isinstance(name, str) and name_pattern.fullmatch(name) is not None and len(name) <= 63,
           f"manifest invalid at metadata.name: {name!r} is not a {name_rule} label")
    validator = jsonschema.Draft7Validator(schema)
    if errors := list(validator.iter_errors(manifest)):
        best = jsonschema.exceptions.best_match(errors)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(f"manifest invalid at {where.lstrip('.') or '<root>'}: "
                        f"{best.message}{more}")
