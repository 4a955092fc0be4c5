"""The training pipeline's logic: step bodies (``steps``), datasets (``dataset``) and runs
(``runner``: validate a request, hand it to a driver, summarise from MLflow).

KFP components in ``components/`` are thin wrappers over ``steps``; the pipeline definition
and what drives it with the KFP SDK (compile, local runner, submit) live in ``pipelines/``,
found through the ``mleops.pipelines`` entry point: the library never imports the shells.
"""

from typing import TYPE_CHECKING

from mleops._lazy import lazy
from mleops._version import IMAGE as BASE_IMAGE

if TYPE_CHECKING:
    from mleops.pipeline.dataset import ColumnSpec, Table
    from mleops.pipeline.runner import (
        PipelineDriver,
        PipelineError,
        RunRequest,
        compile_pipeline,
        load_driver,
        run_pipeline,
    )

# a pipeline task imports ``mleops.pipeline.steps``: not the runner, the gate or scipy
__getattr__ = lazy(__name__, {
    "ColumnSpec": "mleops.pipeline.dataset", "Table": "mleops.pipeline.dataset",
    **dict.fromkeys(("PipelineDriver", "PipelineError", "RunRequest", "compile_pipeline",
                     "load_driver", "run_pipeline"), "mleops.pipeline.runner")})

__all__ = ["BASE_IMAGE", "ColumnSpec", "PipelineDriver", "PipelineError", "RunRequest", "Table",
           "compile_pipeline", "load_driver", "run_pipeline"]
