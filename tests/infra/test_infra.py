"""infra/: Prometheus rules (promtool check + unit tests), the Grafana dashboard's queries, the
Kubernetes manifests (kustomize build, least-privilege RBAC, references) and the runbooks.

promtool is required (Debian package ``prometheus``; ``.ci/run`` installs it): a missing
promtool fails, it never skips. kustomize builds are done in Python (resources, generators,
patches, images, labels); where ``kubectl``/``kustomize`` exists the real build must agree.
"""

import base64
import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mleops.deploy import SERVER_IMAGE
from mleops.deploy.seldon import GROUP, PLURAL

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
RULES, RULES_TEST = INFRA / "prometheus" / "rules.yaml", INFRA / "prometheus" / "rules_test.yaml"
RUNBOOK = INFRA / "prometheus" / "RUNBOOK.md"
DASHBOARD = INFRA / "grafana" / "mleops-dashboard.json"
K8S = INFRA / "k8s"
OVERLAY = K8S / "overlays" / "local"
EXECUTOR = {f"seldon_api_executor_server_requests_seconds_{s}" for s in ("bucket", "count", "sum")}
BUILTIN = {"ALERTS", "ALERTS_FOR_STATE"}  # series Prometheus itself writes


# --- metric names ------------------------------------------------------------------------------
def exported_metrics() -> set[str]:
    """What the model server exports (its adapter imports seldon_core only when serving, so
    it imports here); counters get ``_total``."""
    from mleops.serving.service import COUNTERS, GAUGES

    return {f"{k}_total" for k in COUNTERS} | set(GAUGES)


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "atan2", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, matchers, ranges, grouping labels,
    Grafana variables and function names removed)."""
    m = re.match(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)?", expr)
    if m:  # Grafana's label_values(metric{...}, label)
        return {m.group(1)} if m.group(1) else set()
    s = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'', "", expr)
    s = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    tokens = re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*+)(?!\s*\()", s)
    return {t for t in tokens if t not in _KEYWORDS}


def test_metric_name_extraction():
    expr = ('sum by (a, b) (rate(foo_total{x=~"a|b", y="sum(z)"}[5m])) / on (c) group_left (d)'
            ' bar:rec offset 1h > 1e-9 and baz unless histogram_quantile(0.99, qux[$__rate_'
            'interval])')
    assert metric_names(expr) == {"foo_total", "bar:rec", "baz", "qux"}
    assert metric_names('label_values(mleops_rows_total{m=~"$model"}, registered_version)') \
        == {"mleops_rows_total"}
    assert exported_metrics() == {"mleops_requests_total", "mleops_rows_total",
                                  "mleops_rows_outside_support_total",
                                  "mleops_rejected_requests_total",
                                  "mleops_failed_requests_total", "mleops_loglik_sum",
                                  "mleops_loglik_sq_sum"}


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _known() -> set[str]:
    recorded = {r["record"] for r in _rules() if "record" in r}
    return exported_metrics() | EXECUTOR | BUILTIN | recorded


def _dashboard_queries() -> list[tuple[str, str]]:
    d = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r}", t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    out += [(f"annotation {a['name']!r}", a["expr"]) for a in d["annotations"]["list"]
            if "expr" in a]
    out += [(f"variable {v['name']}", v["query"]["query"]) for v in d["templating"]["list"]
            if v["type"] == "query"]
    return out


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_only_use_exported_recorded_or_seldon_metrics(source):
    queries = ([(r.get("record") or r["alert"], r["expr"]) for r in _rules()]
               if source == "rules" else _dashboard_queries())
    assert queries
    unknown = {(where, n) for where, e in queries for n in metric_names(e) - _known()}
    assert not unknown, f"metrics neither exported, recorded nor Seldon's: {sorted(unknown)}"


# --- Prometheus rules ----------------------------------------------------------------------
def _promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: install the Debian package `prometheus` "
                    "(apt-get install prometheus; .ci/run does it) to check infra/prometheus")
    return subprocess.run([exe, *args], cwd=RULES.parent, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args", [("check", "rules", RULES.name),
                                  ("test", "rules", RULES_TEST.name)])
def test_promtool(args):
    r = _promtool(*args)
    assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"


def test_every_alert_is_actionable_and_unit_tested_both_ways():
    alerts = [r for r in _rules() if "alert" in r]
    anchors = {re.sub(r"[^a-z0-9-]", "", h.lower()) for h in
               re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)}
    tests = [t for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
             for t in case.get("alert_rule_test", [])]
    for a in alerts:
        name, ann = a["alert"], a["annotations"]
        assert a["labels"]["severity"] in ("critical", "warning") and a["for"], name
        assert ann["summary"] and ann["description"], name
        assert ann["runbook_url"].split("#")[1] in anchors, f"{name}: no runbook section"
        mine = [t for t in tests if t["alertname"] == name]
        assert any(t["exp_alerts"] for t in mine), f"{name}: no test shows it firing"
        assert any(not t["exp_alerts"] for t in mine), f"{name}: no test shows it quiet"


def test_prometheusrule_carries_exactly_the_rule_file():
    wrapped = yaml.safe_load((K8S / "monitoring" / "prometheusrule.yaml").read_text())
    assert wrapped["spec"] == yaml.safe_load(RULES.read_text()), \
        "stale: run python infra/prometheus/prometheusrule.py"


# --- Grafana -------------------------------------------------------------------------------
def test_dashboard_rows_variables_and_layout():
    d = json.loads(DASHBOARD.read_text())
    assert d["schemaVersion"] >= 36 and d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"model", "version", "deployment"} <= set(variables)
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert [p["title"] for p in panels if p["type"] == "row"] == ["Executive", "On-call", "Debug"]
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']!r} overlaps another panel"
        cells |= mine
        for t in p.get("targets", []):
            assert (t.get("datasource") or p["datasource"])["uid"] == "${datasource}", p["title"]
    queries = " ".join(e for _, e in _dashboard_queries())
    for needed in ("mleops:loglik_avg:baseline7d", "mleops:rows:rate5m", "ALERTS",
                   "mleops:outside_support:ratio_rate5m", "mleops:requests:error_ratio_rate5m",
                   "mleops:request_latency_seconds:p99_rate5m", "mleops_loglik_sq_sum",
                   "worker_id", "predictor_name"):
        assert needed in queries, needed


# --- Kubernetes ----------------------------------------------------------------------------
def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _merge(base, patch):
    """Strategic merge, as far as these manifests need it: maps merge, lists of named items
    merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in patch.items()}}
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        by_name = {i["name"]: i for i in base}
        merged = [_merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        return [i for i in base if i["name"] not in {p["name"] for p in patch}] + merged
    return patch


def _key(d: dict) -> tuple:
    return d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def kustomize(root: Path) -> list[dict]:
    """``kustomize build root`` for the features this repository uses."""
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs = []
    for r in k.get("resources", []):
        docs += kustomize(root / r) if (root / r).is_dir() else _docs(root / r)
    for kind, gens in (("Secret", k.get("secretGenerator", [])),
                       ("ConfigMap", k.get("configMapGenerator", []))):
        for g in gens:
            assert k.get("generatorOptions", {}).get("disableNameSuffixHash"), \
                "the Python build does not hash generated names"
            data = dict(item.split("=", 1) for item in g.get("literals", []))
            if kind == "Secret":
                data = {n: base64.b64encode(v.encode()).decode() for n, v in data.items()}
            meta = {k: g[k] for k in ("name", "namespace") if k in g}
            docs.append({"apiVersion": "v1", "kind": kind, "metadata": meta, "data": data,
                         **({"type": "Opaque"} if kind == "Secret" else {})})
    index = {_key(d): i for i, d in enumerate(docs)}
    for p in k.get("patches", []):
        for patch in _docs(root / p["path"]):
            assert _key(patch) in index, f"{p['path']}: patch target {_key(patch)} not found"
            i = index[_key(patch)]
            docs[i] = _merge(docs[i], patch)
    for img in k.get("images", []):
        for c in (c for d in docs for c in _containers(d)):
            name, _, _ = c["image"].partition(":")
            if name == img["name"]:
                c["image"] = f"{img.get('newName', name)}:{img['newTag']}"
    for lab in k.get("labels", []):
        for d in docs:
            d["metadata"]["labels"] = {**d["metadata"].get("labels", {}), **lab["pairs"]}
    return docs


def _real_kustomize(root: Path) -> list[dict] | None:
    cmd = (["kustomize", "build"] if shutil.which("kustomize")
           else ["kubectl", "kustomize"] if shutil.which("kubectl") else None)
    if cmd is None:
        return None
    r = subprocess.run([*cmd, str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def local():
    built = kustomize(OVERLAY)
    real = _real_kustomize(OVERLAY)  # only where a kustomize binary exists (not in CI)
    if real is not None:
        assert sorted(map(_key, real)) == sorted(map(_key, built))
        by_key = {_key(d): d for d in real}
        for d in built:
            assert by_key[_key(d)] == d, f"{_key(d)} differs from kustomize's build"
    return {_key(d): copy.deepcopy(d) for d in built}


def test_every_manifest_parses_and_every_reference_exists():
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    for f in files:
        for d in _docs(f):
            if d.get("kind") == "Kustomization":
                for r in d.get("resources", []) + [p["path"] for p in d.get("patches", [])]:
                    assert (f.parent / r).exists(), f"{f}: {r} does not exist"
            else:
                assert d.get("apiVersion") and d.get("kind"), f
                assert d.get("metadata", {}).get("name"), f"{f}: {d.get('kind')} without a name"


def test_rollout_rbac_is_least_privilege(local):
    head = (REPO / "src" / "mleops" / "deploy" / "crds" / "seldondeployment-crd.yaml").read_text()[:4000]
    assert re.search(rf"^\s+group: {re.escape(GROUP)}$", head, re.M)
    assert re.search(rf"^\s+plural: {PLURAL}$", head, re.M)
    kinds = {k[0] for k in local}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = [d for k, d in local.items() if k[0] == "Role"]
    assert len(roles) == 1
    role = roles[0]
    assert role["rules"] == [{"apiGroups": [GROUP], "resources": [PLURAL],
                              "verbs": ["get", "list", "watch", "patch"]}]
    ns = role["metadata"]["namespace"]
    binding = local[("RoleBinding", ns, role["metadata"]["name"])]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject["namespace"] == ns
    assert ("ServiceAccount", ns, subject["name"]) in local
    job = _docs(K8S / "jobs" / "rollout-job.yaml")[0]
    assert job["metadata"]["namespace"] == ns
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == subject["name"]
    for (kind, _, name), d in local.items():  # nothing else runs with an API identity
        if kind in ("Deployment", "StatefulSet", "Job"):
            spec = d["spec"]["template"]["spec"]
            assert spec.get("serviceAccountName") in (None, "default"), name


def test_references_selectors_and_images(local):
    for (kind, ns, name), d in local.items():
        if kind in ("Deployment", "StatefulSet", "Job"):
            pod = d["spec"]["template"]
            if "selector" in d["spec"]:
                labels = pod["metadata"]["labels"]
                assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
            for c in _containers(d):
                image = c["image"]
                assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
                refs = [("ConfigMap", e["configMapRef"]["name"]) for e in c.get("envFrom", [])
                        if "configMapRef" in e]
                refs += [("Secret", e["secretRef"]["name"]) for e in c.get("envFrom", [])
                         if "secretRef" in e]
                for e in c.get("env", []):
                    src = e.get("valueFrom", {})
                    if "secretKeyRef" in src:
                        refs.append(("Secret", src["secretKeyRef"]["name"]))
                        key = src["secretKeyRef"]["key"]
                        assert key in local[("Secret", ns, src["secretKeyRef"]["name"])]["data"]
                    if "configMapKeyRef" in src:
                        refs.append(("ConfigMap", src["configMapKeyRef"]["name"]))
                for ref in refs:
                    assert (ref[0], ns, ref[1]) in local, f"{name}/{c['name']}: no {ref} in {ns}"
        if kind == "Service":
            pods = [d2["spec"]["template"] for (k2, ns2, _), d2 in local.items()
                    if ns2 == ns and k2 in ("Deployment", "StatefulSet")
                    and d["spec"]["selector"].items() <= d2["spec"]["template"]["metadata"]
                    ["labels"].items()]
            assert pods, f"Service {name} selects no pods"
            ports = {p["name"] for t in pods for c in t["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in d["spec"]["ports"]:
                assert p["targetPort"] in ports, f"Service {name}: no container port {p}"


def test_mlflow_server_uses_postgres_and_the_object_store(local):
    mlflow = local[("Deployment", "mleops", "mlflow")]
    (c,) = mlflow["spec"]["template"]["spec"]["containers"]
    args = " ".join(c["args"])
    assert c["args"][:2] == ["mlflow", "server"] and "--host=0.0.0.0" in args
    assert "--backend-store-uri=postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@" in args
    assert "--artifacts-destination=$(MLEOPS_ARTIFACTS_DESTINATION)" in args
    config = local[("ConfigMap", "mleops", "mlflow-config")]["data"]
    assert config["MLEOPS_ARTIFACTS_DESTINATION"] == "s3://mlflow-artifacts"
    assert config["MLFLOW_S3_ENDPOINT_URL"].startswith("http://minio.")
    assert ("StatefulSet", "mleops", "mlflow-postgres") in local
    rollout = local[("ConfigMap", "models", "rollout-config")]["data"]
    assert rollout["MLEOPS_SERVER_IMAGE"] == SERVER_IMAGE  # the image mleops deploy renders


def test_readme_paths_exist():
    text = (INFRA / "README.md").read_text()
    paths = set(re.findall(r"`?((?:infra|serving|src)/[\w./-]+[\w])`?", text))
    assert paths
    for p in paths:
        assert (REPO / p).exists(), f"infra/README.md names {p}, which does not exist"
