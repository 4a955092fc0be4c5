# MLflow tracking server image for infra/k8s/base/mlflow.yaml: MLflow plus the Postgres driver
# (backend store) and boto3 (S3-compatible artifact store). Keep MLFLOW_VERSION equal to the
# client MLflow that mleops installs (`pip show mlflow` in the project venv).
# Build from the repository root:
#   docker build -f infra/docker/mlflow.Dockerfile -t ghcr.io/mleops/mlflow-server:3.17.2 .
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg2-binary>=2.9" "boto3>=1.34" && \
    useradd --create-home --uid 1000 mlflow
USER 1000
EXPOSE 5000
# infra/k8s/base/mlflow.yaml passes the full `mlflow server ...` command line.
