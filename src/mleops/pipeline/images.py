"""Component image: built from ``infra/docker/Dockerfile`` with mleops installed."""

BASE_IMAGE = "ghcr.io/mleops/mleops:0.1.0"
