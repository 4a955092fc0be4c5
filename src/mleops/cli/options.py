"""Options shared by more than one command: ``mleops pipeline run``'s, which
``mleops monitor --on-drift retrain`` also parses (``--pipeline-args``), defined once."""

from __future__ import annotations

import click

from mleops._config import GATE_TOLERANCE as DEFAULT_TOLERANCE
from mleops._config import INCONCLUSIVE_POLICIES
from mleops.deploy.kserve import MODES, SERVERLESS
from mleops.deploy.release import TARGETS


class _Size(click.ParamType):
    """A byte count: ``0``, ``123``, or a size such as ``512MB``, ``10GB``, ``1.5GiB``."""

    name = "size"

    def convert(self, value, param, ctx) -> int:
        from mleops.batches import parse_size
        from mleops.errors import DataError

        if isinstance(value, int) or str(value).strip() == "0":
            return int(value)
        try:
            return parse_size(value)
        except DataError:
            self.fail(f"{value!r} is not a size like 0, 512MB, 10GB or 1.5GiB", param, ctx)


SIZE = _Size()

#: ``mleops pipeline run``'s options (``--host`` & co. included)
PIPELINE_RUN = [
    click.option("--data", "data_uri", required=True,
                 help="Training data: a CSV/Parquet file, a directory of Parquet files (hive "
                      "partitions too), or an object-store URI (s3://, gs://, ...)."),
    click.option("--family", required=True),
    click.option("--model-name", required=True, help="Registered model name (and MLflow experiment)."),
    click.option("--column", default=""),
    click.option("--censor-column", default="", help="1 = event observed, 0 = right-censored."),
    click.option("--weights-column", default=""),
    click.option("--covariates", default="", help="Comma-separated covariate columns."),
    click.option("--time-column", default="", help="Orders rows for --time-ordered splits."),
    click.option("--key-column", "key_column", multiple=True,
                 help="A fleet: one model per key of this column (repeat for a composite "
                      "key), fitted, gated key by key and registered as one version."),
    click.option("--fdr", "fleet_fdr", type=float, default=0.05, show_default=True,
                 help="With --key-column: false discovery rate of the keys the gate finds "
                      "worse (e-BH across keys); those keep the champion's parameters."),
    click.option("--time-ordered", is_flag=True, help="Hold out the latest rows instead of a random split."),
    click.option("--threshold", type=float, default=0.0, help="genpareto threshold."),
    click.option("--components", type=int, default=0, help="gaussian mixture components."),
    click.option("--validation-data", "validation_data_uri", default="",
                 help="Fixed held-out set, same forms as --data (else a seeded split of "
                      "--data); at least 10 rows."),
    click.option("--holdout-fraction", type=float, default=0.2),
    click.option("--seed", type=int, default=0),
    click.option("--tracking-uri", default="", help="MLflow tracking URI (default: ./mlruns.db)."),
    click.option("--gate-tolerance", type=float, default=DEFAULT_TOLERANCE, show_default=True,
                 help="Allowed held-out loglik deficit per row (nats) vs the champion."),
    click.option("--gate-confidence", type=float, default=0.95),
    click.option("--gate-test", type=click.Choice(["z", "bootstrap"]), default="z"),
    click.option("--gate-on-inconclusive", type=click.Choice(list(INCONCLUSIVE_POLICIES)),
                 default=INCONCLUSIVE_POLICIES[0], show_default=True,
                 help="When held-out rows cannot tell candidate and champion apart: register "
                      "as challenger (the canary decides, exit 0) or reject (exit 3)."),
    click.option("--accelerator-type", "train_accelerator_type", default="",
                 help="KFP accelerator for the train task (e.g. nvidia.com/gpu)."),
    click.option("--train-max-memory", type=SIZE, default="0", show_default=True,
                 help="Stream the training table in batches holding about this much (512MB, "
                      "2GB); 0 = only when it would not fit in the train task's memory."),
    click.option("--deploy-namespace", default="models", help="Namespace of the served model."),
    click.option("--deploy-canary-traffic", type=int, default=10,
                 help="Percent of traffic for a newly registered challenger."),
    click.option("--deploy-apply", is_flag=True, help="Apply the manifest (needs a cluster)."),
    click.option("--deploy-target", type=click.Choice(sorted(TARGETS)), default="seldon",
                 show_default=True, help="SeldonDeployment or KServe InferenceService."),
    click.option("--deploy-mode", type=click.Choice(list(MODES)), default=SERVERLESS,
                 show_default=True, help="With --deploy-target kserve: KServe's deployment "
                                         "mode (a canary needs Serverless/Knative or Standard)."),
    click.option("--trainjob-min-bytes", type=SIZE, default="0", show_default=True,
                 help="Fit data larger than this (10GB, 1.5GiB, bytes) as a Kubeflow Trainer "
                      "TrainJob instead of in the train task; 0 = never. Needs object-store "
                      "--data, --validation-data and --trainjob-result-uri."),
    click.option("--trainjob-result-uri", default="",
                 help="Object-store prefix the TrainJob writes its fit result under."),
    click.option("--trainjob-nodes", type=click.IntRange(min=1), default=2, show_default=True,
                 help="TrainJob pods (JAX processes)."),
    click.option("--trainjob-namespace", default="models", show_default=True),
    click.option("--trainjob-env-secret", default="",
                 help="Secret with AWS_* keys for the TrainJob pods' object-store access."),
    click.option("--trainjob-timeout", "trainjob_timeout_s", type=click.FloatRange(min=1),
                 default=3600.0, show_default=True,
                 help="Seconds the train task waits for the TrainJob."),
    click.option("--artifacts-destination", default="",
                 envvar="MLEOPS_ARTIFACTS_DESTINATION",
                 help="Tracking server's artifact store (e.g. s3://bucket/path) for modelUri."),
    click.option("--git-commit", default="",
                 help="Commit trained from (default: the checkout here, else $GITHUB_SHA & co.)."),
    click.option("--host", default="", help="KFP API server: run there (and wait) instead of "
                                            "locally."),
    click.option("--namespace", default="", help="With --host: the KFP (profile) namespace."),
    click.option("--experiment", default="", help="With --host: KFP experiment (default: the "
                                                  "model name)."),
    click.option("--token-file", default="", envvar="KF_PIPELINES_SA_TOKEN_PATH",
                 help="With --host: file holding the bearer token (else $KFP_TOKEN)."),
    click.option("--no-wait", is_flag=True, help="With --host: submit and return (exit 0)."),
    click.option("--timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True,
                 help="With --host: seconds to wait for the run (then exit 1)."),
    click.option("--pipeline-root", default="", help="Local runner output directory (with "
                                                     "--host: an object-store URI)."),
    click.option("--no-cache", is_flag=True, help="Disable KFP step caching."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
]


def pipeline_run_options(f):
    """Decorate a command with every ``mleops pipeline run`` option."""
    for option in reversed(PIPELINE_RUN):
        f = option(f)
    return f


TOKEN_ENV = "KFP_TOKEN"
_HOST_ONLY = ("namespace", "experiment", "no_wait")


def split_pipeline_run(params: dict) -> tuple[dict, dict]:
    """Parsed ``pipeline run`` options -> (``RunRequest`` fields, ``run_pipeline`` keywords)."""
    import os

    from mleops.errors import DataError
    from mleops.pipeline.provenance import git_commit
    from mleops.pipeline.runner import Host

    p = dict(params)
    p.pop("as_json", None)
    p["key_column"] = ",".join(p.get("key_column") or ())
    url, root, no_cache = p.pop("host"), p.pop("pipeline_root"), p.pop("no_cache")
    given = {k: p.pop(k) for k in (*_HOST_ONLY, "token_file", "timeout")}
    if not url and (used := [k for k in _HOST_ONLY if given[k]]):
        raise DataError(f"--{used[0].replace('_', '-')} needs --host")
    host = None
    if url:
        token = os.environ.get(TOKEN_ENV, "")
        if not token and (path := given["token_file"]):
            try:
                with open(path) as f:
                    token = f.read().strip()
            except OSError as e:
                raise DataError(f"--token-file {path}: {e.strerror}") from None
        host = Host(url, namespace=given["namespace"], experiment=given["experiment"],
                    token=token, wait=not given["no_wait"], timeout_s=given["timeout"])
    p["git_commit"] = p.get("git_commit") or git_commit()
    return p, {"host": host, "pipeline_root": root,
               "enable_caching": False if no_cache else None}


def parse_pipeline_run(args: list[str], prog: str = "pipeline run") -> dict:
    """``mleops pipeline run`` arguments -> its parameters (click.UsageError on bad ones)."""
    command = click.command(prog)(pipeline_run_options(lambda **kw: kw))
    return dict(command.make_context(prog, list(args)).params)


#: the rollout test's and guardrails' options (``mleops rollout start``, ``mleops judge``)
ROLLOUT_TEST = [
    click.option("--min-drop", type=float, default=None,
                 help="Smallest drop in nats/row worth catching (the test's tolerance)."),
    click.option("--alpha", type=float, default=None, help="False-rollback probability."),
    click.option("--step-min-rows", type=int, default=None, help="Canary rows per step."),
    click.option("--metrics-timeout", type=float, default=None,
                 help="Seconds without canary metrics before rolling back."),
]


def rollout_test_options(f):
    """Decorate a command with the rollout test's options (None: the library's default)."""
    for option in reversed(ROLLOUT_TEST):
        f = option(f)
    return f


def rollout_test(min_drop, alpha, step_min_rows, metrics_timeout):
    """Those options -> (TestConfig, Guardrails); DataError names a bad value."""
    from mleops.rollout import Guardrails, TestConfig

    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # noqa: E731
    return (TestConfig(**given(min_drop=min_drop, alpha=alpha)),
            Guardrails(**given(step_min_rows=step_min_rows, metrics_timeout_s=metrics_timeout)))


def parse_labels(pairs, option: str = "--evidence-label") -> dict[str, str]:
    """``("job=x", ...)`` -> {"job": "x"}; click.UsageError on a pair without '='."""
    labels = dict(kv.split("=", 1) for kv in pairs if "=" in kv)
    if len(labels) != len(pairs):
        raise click.UsageError(f"{option} takes KEY=VALUE")
    return labels


def model_location_options(f):
    """Where a manifest's model versions lie: looked up in MLflow, or given (``mleops deploy
    render`` and ``mleops deploy fleet-canary`` take the same options)."""
    for opt in reversed([
        click.option("--tracking-uri", default="", help="MLflow tracking URI (default: "
                     "$MLFLOW_TRACKING_URI, else sqlite in the working directory)."),
        click.option("--model-uri", help="Where the version's model lies (skips the MLflow "
                                         "lookup)."),
        click.option("--canary-model-uri", help="Same for the canary version."),
        click.option("--artifacts-destination", envvar="MLEOPS_ARTIFACTS_DESTINATION",
                     help="Tracking server's --artifacts-destination, to map "
                          "mlflow-artifacts: URIs."),
        click.option("--image", help="Model-server image (default: mleops' release image).")]):
        f = opt(f)
    return f


def emit_manifest(manifest: dict | list[dict], output: str | None) -> None:
    """A rendered manifest (or several, as one multi-document YAML) to ``output`` (said on
    stderr) or to stdout."""
    import yaml

    from mleops.deploy import to_yaml

    text = to_yaml(manifest) if isinstance(manifest, dict) else yaml.safe_dump_all(
        manifest, sort_keys=False, default_flow_style=False)
    if output:
        with open(output, "w") as f:
            f.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def fit_column_options(f):
    """How a table's columns map onto the model: ``mleops fit`` and the pods of a TrainJob
    (which run ``mleops fit``) take the same options."""
    for opt in reversed([
        click.option("--column", help="Column holding the response (default: the only one "
                                      "left)."),
        click.option("--censor-column", help="1 = event observed, 0 = right-censored."),
        click.option("--covariates", help="Comma-separated covariate columns (an intercept "
                                          "'const' is added)."),
        click.option("--threshold", type=float, help="Threshold for genpareto (peaks over "
                                                     "threshold)."),
        click.option("--weights-column", help="Observation weights."),
        click.option("--components", "k", type=int, help="Components of a gaussian mixture."),
    ]):
        f = opt(f)
    return f
