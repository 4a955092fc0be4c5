"""``mleops deploy fleet-canary``: the routing ConfigMap and the InferenceService of a fleet
canary (both tables in one pod), for ``mleops rollout fleet start --routing-file
configmap://NAMESPACE/NAME-routing`` to drive."""

from __future__ import annotations

import click

from mleops.cli.options import model_location_options


@click.command("fleet-canary")
@click.argument("name")
@click.option("--version", "version", required=True, help="The champion fleet's version.")
@click.option("--canary-version", required=True, help="The candidate fleet's version.")
@click.option("--model-name", help="Registered model name (default: NAME).")
@click.option("--weight", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Each key's share of requests to the candidate at the start (percent).")
@click.option("--mode", type=click.Choice(["split", "shadow"]), default="split",
              show_default=True)
@click.option("--namespace", default="models", show_default=True)
@click.option("--deployment-mode", type=click.Choice(["Serverless", "Knative", "RawDeployment",
                                                      "Standard"]), default="Serverless",
              show_default=True)
@click.option("--service-account", help="Service account with the storage credentials.")
@model_location_options
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed replicas; with more than one, drive it with --server "
                   "endpoints://NAMESPACE/NAME-predictor (every replica's counters).")
@click.option("--cpu", default="1", show_default=True)
@click.option("--memory", default="2Gi", show_default=True)
@click.option("--max-rows", type=int, default=10_000, show_default=True)
@click.option("--apply", "do_apply", is_flag=True, help="Create/update both in the cluster.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the YAML here.")
def fleet_canary_cmd(name, version, canary_version, model_name, weight, mode, namespace,
                     deployment_mode, service_account, tracking_uri, model_uri,
                     canary_model_uri, artifacts_destination, image, replicas, cpu, memory,
                     max_rows,
                     do_apply, output) -> None:
    """Print the ConfigMap + InferenceService NAME serving fleet VERSION with CANARY beside it."""
    from mleops.cli.options import emit_manifest
    from mleops.deploy import IMAGE, model_artifact_uri, render_fleet_canary

    model_name = model_name or name
    if model_uri is None or canary_model_uri is None:
        from mleops.registry import Registry

        reg = Registry(tracking_uri or None)
        for v in (version, canary_version):
            if reg.load_fleet(model_name, v) is None:
                raise click.UsageError(f"version {v} of {model_name!r} is not a fleet")

        def uri(v):
            return model_artifact_uri(reg, model_name, v,
                                      artifacts_destination=artifacts_destination)
        model_uri = model_uri or uri(version)
        canary_model_uri = canary_model_uri or uri(canary_version)
    cm, isvc = render_fleet_canary(
        name, model_name=model_name, version=str(version), model_uri=model_uri,
        canary_version=str(canary_version), canary_model_uri=canary_model_uri, weight=weight,
        mode=mode, namespace=namespace, image=image or IMAGE, replicas=replicas, cpu=cpu,
        memory=memory,
        max_rows=max_rows, service_account=service_account, deployment_mode=deployment_mode)
    emit_manifest([cm, isvc], output)
    if do_apply:
        from mleops.deploy import apply_manifest, write_configmap

        write_configmap(cm)  # the routing first: the pod mounts it
        apply_manifest(isvc)
        server = (f"endpoints://{namespace}/{name}-predictor" if replicas > 1
                  else f"http://{name}-predictor.{namespace}.svc")
        click.echo(f"applied ConfigMap {namespace}/{cm['metadata']['name']} and "
                   f"InferenceService {namespace}/{name}; drive it with: mleops rollout fleet "
                   f"start {model_name} --candidate-version {canary_version} --server "
                   f"{server} --routing-file configmap://{namespace}/{cm['metadata']['name']}",
                   err=True)
