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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mleops.errors import DataError, MleopsError

DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


class DeployError(MleopsError, RuntimeError):
    """The cluster could not be reached or refused a request, or a manifest would not do what
    it says there; the message says which and why."""


@dataclass(frozen=True)
class Resource:
    """Where the API server keeps one kind of custom object (what every API call names)."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def ref(self, namespace: str) -> dict[str, str]:
        """The keywords of a ``CustomObjectsApi`` call for this kind in ``namespace``."""
        return dict(group=self.group, version=self.version, namespace=namespace,
                    plural=self.plural)


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


def check_release(*, namespace: str, secret: str | None, model_name: str, version: str,
                  model_uri: str, canary_traffic: int, replicas: int, max_rows: int, cpu: str,
                  memory: str, image: str) -> tuple[str, str, str]:
    """The checks every model-server manifest makes of its settings (DataError names the
    first bad one); (model name, version, model URI) as the manifest uses them."""
    check(isinstance(namespace, str) and len(namespace) <= 63
           and bool(DNS1123.fullmatch(namespace)), f"namespace {namespace!r} is not a DNS-1123 "
           f"label (1-63 lowercase letters, digits, '-'; starting and ending alphanumeric)")
    check(secret is None or isinstance(secret, str)
           and len(secret) <= 253 and bool(SUBDOMAIN.fullmatch(secret)),
           f"env_secret_ref_name {secret!r} is not a secret name (DNS-1123 subdomain)")
    model_name = label_value("model name", model_name)
    version = label_value("model version", version)
    model_uri = check_uri("model_uri", model_uri)
    for what, v, low, high in (("canary_traffic", canary_traffic, 0, 100),
                               ("replicas", replicas, 0, 1000), ("max_rows", max_rows, 1, None)):
        check(isinstance(v, int) and not isinstance(v, bool) and low <= v
               and (high is None or v <= high), f"{what} must be an integer in "
               f"{low}..{high if high is not None else ''}, got {v!r}")
    for what, q in (("cpu", cpu), ("memory", memory)):
        check(isinstance(q, str) and bool(QUANTITY.fullmatch(q)),
               f"{what} {q!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi, 1Gi)")
    check(isinstance(image, str) and bool(image) and " " not in image,
           f"image must be a non-empty image reference, got {image!r}")
    return model_name, version, model_uri


def check_canary(version: str, canary_version: str | None, canary_model_uri: str | None,
                 canary_traffic: int) -> tuple[str | None, str | None]:
    """A canary is a different version with its own URI; without one, no canary settings."""
    if canary_version is None:
        check(canary_traffic == 0,
               f"canary_traffic={canary_traffic} given without a canary version")
        check(canary_model_uri is None, "canary_model_uri given without a canary version")
        return None, None
    canary_version = label_value("canary version", canary_version)
    check(canary_version != version, f"canary version {canary_version} is the version "
                                      f"the main predictor already serves")
    return canary_version, check_uri("canary_model_uri", canary_model_uri)


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
