"""A real S3 API on 127.0.0.1: moto's standalone server (``moto[server]``), one per use."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from support.mlflow_server import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def client(env: dict, service: str = "s3"):
    """A boto3 client for the server and credentials in ``env``."""
    import boto3

    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        region_name=env["AWS_DEFAULT_REGION"])


def _user_with_key(env: dict) -> dict:
    """An IAM user allowed everything, and its access key (the only credentials that work)."""
    import json

    iam = client(env, "iam")
    iam.create_user(UserName="ci")
    iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="ci")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@contextlib.contextmanager
def s3_server(*buckets: str, auth: bool = False) -> Iterator[dict]:
    """The environment a client needs (endpoint and credentials) with ``buckets`` made.

    With ``auth`` the server checks signatures (moto's IAM enforcement after the 3 calls that
    make a user and its key), so wrong credentials are refused as on AWS.
    """
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    extra = {"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if auth else {}
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **extra},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": url, "MLFLOW_S3_ENDPOINT_URL": url}
        if auth:
            env.update(_user_with_key(env))
        s3 = client(env)
        for b in buckets:
            s3.create_bucket(Bucket=b)
        yield env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
