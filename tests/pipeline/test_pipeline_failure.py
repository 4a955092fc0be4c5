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
