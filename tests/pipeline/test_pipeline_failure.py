"""A failed task's own error reaches the CLI's last line and its exit code."""

from __future__ import annotations

import os

import pytest

from mleops.cli import exits
from mleops.errors import DataError
from mleops.pipeline import failure
from mleops.pipeline.runner import PipelineError


def test_a_step_that_fails_leaves_its_record_and_the_first_one_is_read():
    @failure.reports_failure("ingest")
    def ingest():
        raise DataError("column 'latency' not found\nsecond line")

    @failure.reports_failure("train")
    def train():
        raise RuntimeError("later")

    with failure.collecting() as where:
        assert os.environ[failure.ENV] == where
        with pytest.raises(DataError):
            ingest()
        with pytest.raises(RuntimeError):
            train()
        rec = failure.first_failure(where)
    assert failure.ENV not in os.environ
    assert (rec["task"], rec["type"], rec["message"]) == \
        ("ingest", "DataError", "column 'latency' not found")


def test_without_a_collector_nothing_is_written_and_nothing_is_found(tmp_path, monkeypatch):
    monkeypatch.delenv(failure.ENV, raising=False)
    failure.record("gate", ValueError("x"))  # no directory named: a no-op
    assert failure.first_failure(str(tmp_path)) is None
    assert failure.first_failure(str(tmp_path / "missing")) is None
    (tmp_path / "1-x.json").write_text("{not json")
    assert failure.first_failure(str(tmp_path)) is None


@pytest.mark.parametrize("cause,code", [("DataError", exits.BAD_INPUT),
                                        ("FitError", exits.FIT_FAILED),
                                        ("ChampionKeptMoving", exits.MOVED),
                                        ("RegistryError", exits.FAILED), ("", exits.FAILED)])
def test_the_exit_code_follows_the_tasks_own_error(cause, code):
    assert exits.for_error(PipelineError("task failed", task="x", cause=cause)) == code


def test_in_a_pod_the_record_goes_to_the_pipelines_mlflow_run(tmp_path, monkeypatch):
    """No shared directory (a cluster): the step records its error on the MLflow run its
    arguments name (created, FAILED, when no task logged one yet); the CLI reads it back
    and puts it on the last line, with the cause's type for the exit code."""
    from mleops.pipeline.runner import host_failure
    from mleops.registry import Registry

    monkeypatch.delenv(failure.ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"

    @failure.reports_failure("evaluate")
    def evaluate(model_dir, *, tracking_uri="", model_name="", run_tag=""):
        raise DataError("held-out rows have no column 'latency'")

    with pytest.raises(DataError):
        evaluate("m", tracking_uri=uri, model_name="pods", run_tag="tag-1")
    with pytest.raises(DataError):  # no run named: nothing recorded, the error still raised
        evaluate("m", tracking_uri=uri, model_name="pods")
    reg = Registry(uri)
    rec = failure.from_registry(reg, "pods", "tag-1")
    assert (rec["task"], rec["type"]) == ("evaluate", "DataError")
    assert failure.from_registry(reg, "pods", "tag-2") is None
    run = reg.client.get_run(reg.find_run("pods", failure.RUN_TAG, "tag-1"))
    assert run.info.status == "FAILED"
    assert len(reg.client.search_runs([run.info.experiment_id])) == 1

    err = host_failure("KFP run r ended FAILED", "", "evaluate", rec)
    assert str(err).splitlines()[-1] == ("task 'evaluate' failed: DataError: held-out rows "
                                         "have no column 'latency'")
    assert exits.for_error(err) == exits.BAD_INPUT
    bare = host_failure("KFP run r ended FAILED", "Error (exit code 1)", "train", None)
    assert str(bare).splitlines()[-1].startswith("task 'train' failed: Error (exit code 1)")
    assert exits.for_error(bare) == exits.FAILED
