"""The one version string, and the image tags built from it (pyproject reads it too)."""

__version__ = "0.1.0"

#: pipeline components, JAXJob workers, the rollout Job (infra/docker/Dockerfile)
IMAGE = f"ghcr.io/mleops/mleops:{__version__}"
#: the model server (serving/Dockerfile)
SERVER_IMAGE = f"ghcr.io/mleops/mleops-server:{__version__}"
