"""``mleops serve`` (a local Seldon model server) and ``mleops predict`` (call an endpoint)."""

from __future__ import annotations

import json
import sys

import click


@click.command("serve")
@click.option("--model-uri", required=True,
              help="Directory with model.json, or models:/NAME@ALIAS, models:/NAME/VERSION.")
@click.option("--port", type=int, default=9000, show_default=True, help="HTTP port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI for models:/ URIs.")
@click.option("--max-rows", type=int, default=10_000, show_default=True,
              help="Largest payload accepted (rows); larger gets HTTP 413.")
@click.option("--threads", type=int, default=4, show_default=True,
              help="Request threads (the compiled kernels release the GIL).")
def serve_cmd(model_uri, port, host, tracking_uri, max_rows, threads) -> None:
    """Run the real seldon-core microservice for a model until interrupted."""
    import signal

    from mleops.serving.model_dir import resolve_model_dir
    from mleops.serving.process import LocalServer

    def _stop(*_):  # SIGTERM (CI, supervisors) stops the server like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    model_dir = resolve_model_dir(model_uri, tracking_uri=tracking_uri)
    server = LocalServer(model_dir, host=host, http_port=port, max_rows=max_rows,
                         threads=threads, log_path="/dev/stderr")
    try:
        server.wait_ready()
        click.echo(json.dumps({"url": server.url, "metrics": server.metrics_url,
                               "model_dir": model_dir}))
        sys.stdout.flush()
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@click.command("predict")
@click.option("--url", required=True, help="Model endpoint (Seldon v1 protocol).")
@click.option("--data", "data", required=True,
              help="JSON file (or - for stdin): a Seldon message, or a bare list of rows.")
@click.option("--output", type=click.Choice(["loglik", "cdf", "sf", "quantiles"]), default=None,
              help="Output to request (sets meta.tags.output).")
def predict_cmd(url, data, output) -> None:
    """Send rows to a model server and print its JSON answer (exit 1 on an HTTP error)."""
    from mleops.errors import DataError
    from mleops.serving.client import predict

    text = sys.stdin.read() if data == "-" else open(data).read()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"--data is not valid JSON: {e}") from None
    if isinstance(payload, list):
        payload = {"data": {"ndarray": payload}}
    if output:
        payload.setdefault("meta", {}).setdefault("tags", {})["output"] = output
    status, body = predict(url, payload)
    click.echo(json.dumps(body, indent=2))
    if status >= 400:
        sys.exit(1)
