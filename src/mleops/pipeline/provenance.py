"""What a pipeline run was made from: the code, the commit, and the candidate it would build.

KFP caches a task by its component spec and inputs, and the component spec holds only the
thin component body, not the library it calls: without ``code_version`` among the inputs a
change to ``mleops.pipeline.steps`` or to the engine would reuse a model trained by the old
code. The commit is read by the CLI where the checkout is (pods have no git), and the
candidate key names what the candidate is built from, so a re-run on the same data
registers nothing new.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import import_module

from mleops._version import __version__

#: the packages whose code decides what a pipeline task computes
CODE_PACKAGES = ("mleops", "mleops_components", "mleops_pipelines")
#: set by the image build (``infra/docker/Dockerfile``): pins the cache key to the image
IMAGE_DIGEST_ENV = "MLEOPS_IMAGE_DIGEST"
GIT_COMMIT_ENV = "MLEOPS_GIT_COMMIT"
#: CI systems' own commit variables, read when no checkout is at hand
CI_COMMIT_ENVS = ("GITHUB_SHA", "CI_COMMIT_SHA", "BUILD_VCS_NUMBER", "GIT_COMMIT")


def code_hash(packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """sha256 over every ``.py`` file of ``packages`` (relative path and bytes, sorted)."""
    h = hashlib.sha256()
    for name in packages:
        try:
            root = os.path.dirname(import_module(name).__file__)
        except ImportError:
            continue
        files = sorted(os.path.relpath(os.path.join(d, f), root)
                       for d, _, fs in os.walk(root) for f in fs if f.endswith(".py"))
        for rel in files:
            with open(os.path.join(root, rel), "rb") as f:
                h.update(f"{name}/{rel}\0".encode())
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def code_version() -> str:
    """``<mleops version>+<code hash, 12 hex>[@<image digest>]``: part of every cache key."""
    out = f"{__version__}+{code_hash()[:12]}"
    if digest := os.environ.get(IMAGE_DIGEST_ENV, ""):
        out += f"@{digest}"
    return out


def git_commit(cwd: str | None = None) -> str:
    """The commit being trained from: ``$MLEOPS_GIT_COMMIT``, the checkout at ``cwd``, or the
    CI system's commit variable; "" when none is known (never a guess)."""
    if given := os.environ.get(GIT_COMMIT_ENV, ""):
        return given
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=cwd)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return next((os.environ[k] for k in CI_COMMIT_ENVS if os.environ.get(k)), "")


def candidate_key(**what) -> str:
    """sha256 of what decides the fitted candidate (data hashes, family, options, columns,
    split): equal keys mean the same model, whatever the gate or deploy settings."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
