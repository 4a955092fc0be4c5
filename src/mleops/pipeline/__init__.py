"""The training pipeline: step logic (``steps``), datasets (``dataset``) and run/compile/submit
(``runner``). KFP components in ``components/`` are thin wrappers over ``steps``."""
