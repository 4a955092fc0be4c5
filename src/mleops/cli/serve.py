"""``mleops serve`` (a local model server: Seldon v1 or OIP v2) and ``mleops predict``."""

from __future__ import annotations

import json
import sys

import click

PROTOCOLS = click.Choice(["v1", "v2"])


@click.command("serve")
@click.option("--model-uri", default=None,
              help="Directory with model.json (or a fleet's fleet.json), or "
                   "models:/NAME@ALIAS, models:/NAME/VERSION (a registered fleet version is "
                   "served as one model, each request row carrying its key).")
@click.option("--model-dir", default=None, type=click.Path(file_okay=False),
              help="A local model directory (model.json, or a fleet's fleet.json + "
                   "fleet.parquet); instead of --model-uri.")
@click.option("--protocol", type=PROTOCOLS, default="v2", show_default=True,
              help="v2: the Open Inference Protocol on KServe's ModelServer (REST and gRPC, "
                   "this environment); v1: Seldon Core's protocol (the seldon-core server, "
                   "in its own environment).")
@click.option("--port", type=int, default=9000, show_default=True, help="HTTP port.")
@click.option("--grpc-port", type=int, default=0,
              help="gRPC port for --protocol v2 (default: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI for models:/ URIs.")
@click.option("--max-rows", type=int, default=10_000, show_default=True,
              help="Largest payload accepted (rows); larger gets HTTP 413.")
@click.option("--threads", type=int, default=4, show_default=True,
              help="Request threads of the v1 server (the compiled kernels release the GIL).")
def serve_cmd(model_uri, model_dir, protocol, port, grpc_port, host, tracking_uri, max_rows,
              threads) -> None:
    """Run a real model server for a model (or a fleet) until interrupted; prints its URLs
    as one JSON line once it is ready."""
    import signal

    if (model_uri is None) == (model_dir is None):
        raise click.UsageError("give one of --model-uri and --model-dir")

    from mleops.serving.model_dir import resolve_model_dir
    from mleops.serving.process import LocalServer, OipServer

    def _stop(*_):  # SIGTERM (CI, supervisors) stops the server like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    model_dir = resolve_model_dir(model_uri or model_dir, tracking_uri=tracking_uri)
    if protocol == "v2":
        server = OipServer(model_dir, host=host, http_port=port, grpc_port=grpc_port,
                           max_rows=max_rows, log_path="/dev/stderr")
    else:
        server = LocalServer(model_dir, host=host, http_port=port, max_rows=max_rows,
                             threads=threads, log_path="/dev/stderr")
    try:
        server.wait_ready()
        urls = {"url": server.url, "metrics": server.metrics_url, "model_dir": model_dir,
                "protocol": protocol}
        if protocol == "v2":
            urls["grpc"] = server.grpc_target
        click.echo(json.dumps(urls))
        sys.stdout.flush()
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@click.command("predict")
@click.option("--url", required=True, help="Model endpoint (server or cluster URL).")
@click.option("--data", "data", required=True,
              help="JSON file (or - for stdin): a request in the protocol's own format, or a "
                   "bare list of rows.")
@click.option("--protocol", type=PROTOCOLS, default="v2", show_default=True,
              help="v1: Seldon's /api/v1.0/predictions; v2: OIP /v2/models/NAME/infer.")
@click.option("--model", "model", help="v2: the model's name (default: the one the server "
                                       "serves).")
@click.option("--version", "version", help="v2: a model version (the server refuses others).")
@click.option("--names", help="Column names of bare rows, comma-separated (default: x; "
                              "covariates by their feature names, optional event).")
@click.option("--output", type=click.Choice(["loglik", "cdf", "sf", "quantiles"]), default=None,
              help="Output to request.")
@click.option("--quantiles", help="Levels for --output quantiles, comma-separated.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds.")
def predict_cmd(url, data, protocol, model, version, names, output, quantiles,
                timeout) -> None:
    """Send rows to a model server and print its JSON answer (exit 1 on an HTTP error)."""
    from mleops.errors import DataError
    from mleops.serving import client

    text = sys.stdin.read() if data == "-" else open(data).read()
    try:
        payload = json.loads(text)
        levels = [float(q) for q in quantiles.split(",")] if quantiles else None
    except ValueError as e:
        raise DataError(f"--data is not valid JSON or --quantiles not numbers: {e}") from None
    columns = names.split(",") if names else None
    try:
        if protocol == "v2":
            if isinstance(payload, list):
                payload = client.oip_request(payload, names=columns, output=output,
                                             quantiles=levels)
            elif output:
                payload.setdefault("parameters", {})["output"] = output
            model = model or _only_model(url)
            status, body = client.infer(url, model, payload, version=version, timeout=timeout)
        else:
            if isinstance(payload, list):
                payload = client.seldon_message(payload, names=columns, output=output,
                                                quantiles=levels)
            elif output:
                payload.setdefault("meta", {}).setdefault("tags", {})["output"] = output
            status, body = client.predict(url, payload, timeout=timeout)
    except ValueError as e:
        raise DataError(str(e)) from None
    except OSError as e:  # unreachable: exit 1, as for any server that cannot be reached
        from mleops.serving import ServerError

        raise ServerError(f"cannot reach {url}: {e}") from None
    click.echo(json.dumps(body, indent=2))
    if status >= 400:
        sys.exit(1)


def _only_model(url: str) -> str:
    from mleops.errors import DataError
    from mleops.serving.client import served_models

    models = served_models(url)
    if len(models) != 1:
        raise DataError(f"{url} serves {models}: name one with --model")
    return models[0]
