"""Drive the training pipeline with the KFP SDK: compile, run locally, submit to a KFP host.

Registered as the ``training`` entry of the ``mleops.pipelines`` entry-point group, so the
library (``mleops.pipeline.runner``) finds it without importing this shell.
"""

import warnings

from mleops.pipeline.runner import PipelineError
from mleops_pipelines import training


class TrainingDriver:
    """The :class:`mleops.pipeline.runner.PipelineDriver` of ``training_pipeline``."""

    yaml_path = training.YAML

    def compile(self, path: str | None = None) -> str:
        return training.compile_yaml(path or training.YAML)

    def run_local(self, arguments: dict, *, pipeline_root: str,
                  enable_caching: bool = True) -> None:
        """Execute the compiled components in this environment with the kfp local runner."""
        from kfp import local

        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root,
                   enable_caching=enable_caching, raise_on_error=True)
        with warnings.catch_warnings():
            # Expected here: the component image runs as this environment; display names and
            # resource requests only matter on a cluster.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            warnings.filterwarnings("ignore",
                                    message=".*have no effect in the current local runner.*")
            try:
                training.training_pipeline(**arguments)
            except RuntimeError as e:
                raise PipelineError(f"pipeline task failed: {e} (outputs under "
                                    f"{pipeline_root})") from e

    def submit(self, host: str, arguments: dict, *, experiment: str,
               enable_caching: bool = True, client=None) -> str:
        """Submit the compiled pipeline to a KFP API server; returns the KFP run id."""
        import kfp

        client = client or kfp.Client(host=host)
        run = client.create_run_from_pipeline_package(
            self.yaml_path, arguments=arguments,
            run_name=f"{arguments['model_name']}-{arguments['run_tag'][:8]}",
            experiment_name=experiment, enable_caching=enable_caching)
        return run.run_id


DRIVER = TrainingDriver()
