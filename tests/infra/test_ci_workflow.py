"""infra/ci/train-and-promote.yml: a GitHub Actions workflow that works as written.

Three layers: the workflow validates against SchemaStore's GitHub workflow schema (vendored by
``check-jsonschema``, so offline); static rules (actions pinned to commit SHAs, no expression
inside a ``run:`` script, least privilege, one run per model, promotion only by canary); and the
step scripts themselves run under ``bash -e -o pipefail`` (what Actions runs for
``shell: bash``) against a fake ``mleops`` that logs its argv and exits with a chosen code.
"""

import copy
import importlib.resources
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "infra" / "ci" / "train-and-promote.yml"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")
MODEL_EXPR = "inputs.model || 'request-latency'"
# Actions' default environment the scripts may use besides what the workflow's env: defines
GITHUB_DEFAULTS = {"GITHUB_OUTPUT", "GITHUB_SHA", "RUNNER_TEMP"}
HOSTILE_DATA = 's3://b/x"; touch pwned; echo "'
HOSTILE_VALIDATION = "s3://b/v/$(touch pwned2)`touch pwned3`"


def load_workflow() -> dict:
    """The workflow as Actions reads it (YAML 1.1 makes the ``on`` key ``True``: undo that)."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    if True in wf:
        wf["on"] = wf.pop(True)
    return wf


@pytest.fixture(scope="module")
def wf() -> dict:
    return load_workflow()


@pytest.fixture(scope="module")
def job(wf) -> dict:
    (job,) = wf["jobs"].values()
    return job


def step(job: dict, step_id: str) -> dict:
    (s,) = [s for s in job["steps"] if s.get("id") == step_id]
    return s


def run_steps(job: dict) -> list[dict]:
    return [s for s in job["steps"] if "run" in s]


# --- schema ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def validator():
    raw = (importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
           .joinpath("github-workflows.json").read_bytes())
    schema = json.loads(raw)
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft7Validator  # what the vendored schema declares
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_workflow_validates_against_schemastore(validator, wf):
    assert schema_errors(validator, wf) == []


@pytest.mark.parametrize("breakage", ["no runs-on", "unknown top-level key", "bad permission"])
def test_schema_rejects_a_broken_workflow(validator, wf, breakage):
    broken = copy.deepcopy(wf)
    (job,) = broken["jobs"].values()
    if breakage == "no runs-on":
        del job["runs-on"]
    elif breakage == "unknown top-level key":
        broken["permission"] = broken.pop("permissions")
    else:
        broken["permissions"] = {"contents": "admin"}
    assert schema_errors(validator, broken)


# --- static rules ----------------------------------------------------------------------------
def test_every_action_is_pinned_to_a_commit_sha_with_its_tag(job):
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    names = {u.split("@")[0] for u in uses}
    assert {"actions/checkout", "actions/setup-python", "actions/upload-artifact"} <= names
    for u in uses:
        assert PINNED.match(u), u
    text = WORKFLOW.read_text()
    for u in uses:  # the human-readable tag rides along as a comment
        assert re.search(rf"uses: {re.escape(u)} # v\d+\.\d+\.\d+$", text, re.M), u


def test_no_expression_inside_any_run_script(job):
    for s in run_steps(job):
        assert "${{" not in s["run"], s.get("name")


def test_every_run_step_is_bash(job):
    for s in run_steps(job):
        assert s.get("shell") == "bash", s.get("name")


def test_scripts_use_only_variables_they_are_given(job):
    """Every ``$VAR`` a script reads is in its env: (job's or step's), set by the script, or
    one of Actions' own variables - a typo would otherwise be an empty string."""
    for s in run_steps(job):
        script = s["run"]
        given = set(job.get("env", {})) | set(s.get("env", {})) | GITHUB_DEFAULTS
        local = set(re.findall(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=", script, re.M))
        used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", script))
        assert used <= given | local, (s.get("name"), used - given - local)


def test_least_privilege_and_secrets_only_where_needed(wf, job):
    assert wf["permissions"] == {"contents": "read"}
    assert "permissions" not in job
    assert not any("secrets." in str(v) for v in job.get("env", {}).values())
    install = [s for s in run_steps(job) if "pip install" in s["run"]]
    assert install and all("env" not in s for s in install)  # third-party code sees no secret
    checkout = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout[0]["with"]["persist-credentials"] is False


def test_one_run_per_model_never_cancelled(wf, job):
    group = wf["concurrency"]["group"]
    assert MODEL_EXPR in group and group.startswith("train-and-promote-")
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert MODEL_EXPR in job["env"]["MODEL"]
    assert isinstance(job["timeout-minutes"], int) and job["timeout-minutes"] > 0


def test_triggers_and_data_sources(wf):
    on = wf["on"]
    inputs = on["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"data", "validation_data", "model"}
    assert inputs["model"]["default"] == "request-latency"
    assert on["schedule"][0]["cron"]
    env = step(wf["jobs"]["train"], "pipeline")["env"]
    # the nightly run has no inputs: the repository variables stand in
    assert env["DATA_URI"] == "${{ inputs.data || vars.TRAINING_DATA_URI }}"
    assert env["VALIDATION_URI"] == "${{ inputs.validation_data || vars.VALIDATION_DATA_URI }}"


def test_promotion_only_through_a_canary(job):
    scripts = [s["run"] for s in run_steps(job)]
    assert not any(re.search(r"mleops\s+models\s+promote", r) for r in scripts)
    canary = [s for s in job["steps"] if s.get("name") == "Canary the new version"]
    assert canary and canary[0]["id"] == "canary"
    assert re.search(r"mleops\s+rollout\s+start\b", canary[0]["run"])


def test_canary_condition_compares_strings(job):
    """Step outputs are strings: ``== '0'`` is exact; an unset output (the pipeline step never
    wrote one) is ``''``, which ``== 0`` would coerce to 0 and treat as success."""
    assert step(job, "canary")["if"] == "steps.pipeline.outputs.exit_code == '0'"


def test_summary_is_uploaded_always(job):
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    summary = [s for s in uploads if s["with"]["path"] == "summary.json"]
    assert summary and summary[0]["if"] == "always()"
    steps = job["steps"]
    assert steps.index(summary[0]) > steps.index(step(job, "pipeline"))


# --- the scripts, run as Actions runs them ------------------------------------------------------
FAKE_MLEOPS = """#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_MLEOPS_LOG"], "a") as f:
    f.write(json.dumps({{"argv": argv, "KUBECONFIG": os.environ.get("KUBECONFIG")}}) + "\\n")
if argv[:2] == ["pipeline", "run"]:
    print(json.dumps({{"registered_version": "7", "gate": {{"outcome": "pass"}}}}))
    sys.exit(int(os.environ.get("FAKE_PIPELINE_EXIT", "0")))
if argv[:2] == ["rollout", "start"]:
    print(json.dumps({{"phase": "promoted"}}))
    sys.exit(int(os.environ.get("FAKE_ROLLOUT_EXIT", "0")))
sys.exit(99)
"""


class Runner:
    """A step's environment as Actions builds it (job env, then step env) with test values in
    place of the expressions, a fake ``mleops`` (and ``python``) first on PATH."""

    def __init__(self, tmp: Path, job: dict):
        self.job, self.work, self.bin = job, tmp / "work", tmp / "bin"
        self.work.mkdir()
        self.bin.mkdir()
        self.log, self.output = tmp / "mleops.log", tmp / "github_output"
        fake = self.bin / "mleops"
        fake.write_text(FAKE_MLEOPS.format(python=sys.executable))
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
        (self.bin / "python").symlink_to(sys.executable)
        self.values = {"DATA_URI": HOSTILE_DATA, "VALIDATION_URI": HOSTILE_VALIDATION,
                       "MODEL": "request-latency", "KUBECONFIG_DATA": ""}
        self.runner_temp = tmp / "runner_temp"
        self.runner_temp.mkdir()

    def run(self, step_id: str, **extra) -> subprocess.CompletedProcess:
        s = step(self.job, step_id)
        env = {k: str(self.values.get(k, f"fake-{k.lower()}"))
               for k in {**self.job.get("env", {}), **s.get("env", {})}}
        env.update(PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                   HOME=os.environ.get("HOME", str(self.work)),
                   GITHUB_OUTPUT=str(self.output), GITHUB_SHA="ab" * 20,
                   RUNNER_TEMP=str(self.runner_temp), FAKE_MLEOPS_LOG=str(self.log), **extra)
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", s["run"]], cwd=self.work,
                              env=env, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def outputs(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def pwned(self) -> list[str]:
        return sorted(p.name for p in self.work.iterdir() if p.name.startswith("pwned"))


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def runner(tmp_path, job) -> Runner:
    return Runner(tmp_path, job)


@pytest.mark.parametrize("code, step_exit", [(0, 0), (1, 1), (2, 2), (3, 0), (5, 0)])
def test_pipeline_step_exit_codes(runner, code, step_exit):
    p = runner.run("pipeline", FAKE_PIPELINE_EXIT=str(code))
    assert p.returncode == step_exit, p.stderr
    assert runner.outputs() == [f"exit_code={code}"]
    assert json.loads((runner.work / "summary.json").read_text())["registered_version"] == "7"
    assert '"registered_version": "7"' in p.stdout  # the summary is printed to the log
    (call,) = runner.calls()
    argv = call["argv"]
    assert argv[:2] == ["pipeline", "run"] and "--json" in argv
    # hostile values arrive verbatim, as single arguments, and run nothing
    assert option(argv, "--data") == HOSTILE_DATA
    assert option(argv, "--validation-data") == HOSTILE_VALIDATION
    assert runner.pwned() == []
    assert option(argv, "--model-name") == "request-latency"
    assert option(argv, "--git-commit") == "ab" * 20
    assert option(argv, "--host") == "fake-kfp_host"
    assert option(argv, "--namespace") == "fake-kfp_namespace"
    assert option(argv, "--tracking-uri") == "fake-mlflow_tracking_uri"
    assert (option(argv, "--family"), option(argv, "--column"), option(argv, "--censor-column"),
            option(argv, "--timeout")) == ("weibull", "latency_s", "completed", "3600")


@pytest.mark.parametrize("missing", ["DATA_URI", "VALIDATION_URI"])
def test_pipeline_step_without_data_is_bad_input(runner, missing):
    """A nightly run with the repository variables unset fails as bad input, runs nothing."""
    runner.values[missing] = ""
    p = runner.run("pipeline")
    assert p.returncode == 2
    assert runner.outputs() == ["exit_code=2"]
    assert runner.calls() == []


def test_injection_probe_catches_interpolation(runner):
    """The probe is real: the old ``--data "${{ inputs.data }}"``, expanded by Actions before
    bash sees it, runs the hostile value's command."""
    script = 'mleops pipeline run --data "${{ inputs.data }}" --json > summary.json'
    runner.job = {"steps": [{"id": "old", "run": script.replace("${{ inputs.data }}",
                                                                HOSTILE_DATA)}]}
    runner.run("old")
    assert runner.pwned() == ["pwned"]


@pytest.mark.parametrize("code", [0, 1, 3])
def test_canary_step_after_a_registration(runner, code):
    assert runner.run("pipeline", FAKE_PIPELINE_EXIT="0").returncode == 0
    p = runner.run("canary", FAKE_ROLLOUT_EXIT=str(code))
    # 3 = rolled back: the candidate was worse live, and that fails the job
    assert p.returncode == code, p.stderr
    pipeline_call, rollout_call = runner.calls()
    argv = rollout_call["argv"]
    assert argv[:3] == ["rollout", "start", "request-latency"]
    assert option(argv, "--candidate-version") == "7"
    assert "--kubernetes" in argv and "--json" in argv
    assert option(argv, "--namespace") == "fake-deploy_namespace"
    assert option(argv, "--prometheus") == "fake-prometheus_url"
    assert option(argv, "--tracking-uri") == "fake-mlflow_tracking_uri"
    assert option(argv, "--timeout") == "7200"
    assert rollout_call["KUBECONFIG"] is None  # no secret: the runner's own cluster access
    assert json.loads((runner.work / "rollout.json").read_text()) == {"phase": "promoted"}


def test_canary_step_writes_the_kubeconfig_secret_privately(runner):
    runner.values["KUBECONFIG_DATA"] = "apiVersion: v1\nkind: Config\n"
    assert runner.run("pipeline").returncode == 0
    assert runner.run("canary").returncode == 0
    kubeconfig = Path(runner.calls()[-1]["KUBECONFIG"])
    assert kubeconfig.parent == runner.runner_temp
    assert kubeconfig.read_text() == "apiVersion: v1\nkind: Config\n\n"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600


def test_canary_step_without_a_version_fails(runner):
    (runner.work / "summary.json").write_text(json.dumps({"registered_version": None}))
    p = runner.run("canary")
    assert p.returncode == 1
    assert runner.calls() == []


def test_the_real_cli_accepts_what_the_workflow_passes(runner):
    """The fake records each argv; the real option definitions must parse them (a renamed or
    missing option would make the job exit 2 on every run)."""
    from mleops.cli.main import main
    from mleops.cli.options import parse_pipeline_run

    runner.run("pipeline", FAKE_PIPELINE_EXIT="0")
    runner.run("canary", FAKE_ROLLOUT_EXIT="0")
    pipeline_call, rollout_call = runner.calls()
    parsed = parse_pipeline_run(pipeline_call["argv"][2:])
    assert parsed["host"] == "fake-kfp_host" and parsed["namespace"] == "fake-kfp_namespace"
    assert parsed["timeout"] == 3600 and parsed["git_commit"] == "ab" * 20
    start = main.get_command(None, "rollout").commands["start"]
    with start.make_context("start", rollout_call["argv"][2:]) as ctx:
        assert ctx.params["kubernetes"] and ctx.params["candidate_version"] == "7"
        assert ctx.params["name"] == "request-latency" and ctx.params["timeout"] == 7200
