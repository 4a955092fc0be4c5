"""Write infra/k8s/monitoring/prometheusrule.yaml: rules.yaml wrapped in a PrometheusRule.

The plain rule file is what promtool checks and tests; the Prometheus Operator wants the same
groups inside a custom resource. Generating the wrapper keeps one source of truth
(tests/test_infra.py fails when the two differ). Run: python infra/prometheus/prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules.yaml"
TARGET = HERE.parent / "k8s" / "monitoring" / "prometheusrule.yaml"
HEADER = ("# Generated from infra/prometheus/rules.yaml by infra/prometheus/prometheusrule.py;"
          " do not edit.\n# `release` must match the ruleSelector of your Prometheus"
          " (kube-prometheus-stack: the Helm release name).\n")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, as in rules.yaml."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def render(rules_path: Path = RULES) -> str:
    """The PrometheusRule manifest (YAML text) carrying the groups of ``rules_path``."""
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    manifest = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "mleops-serving", "namespace": "monitoring",
                             "labels": {"app.kubernetes.io/part-of": "mleops",
                                        "release": "kube-prometheus-stack"}},
                "spec": {"groups": groups}}
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=1000)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
