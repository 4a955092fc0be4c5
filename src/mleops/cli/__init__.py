"""The ``mleops`` command line (imports are lazy: ``mleops fit`` never loads mlflow/kfp)."""
