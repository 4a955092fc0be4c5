"""``mleops deploy``: SeldonDeployment or KServe InferenceService manifests for registered
models; apply; shift traffic."""

from __future__ import annotations

import click

from mleops.cli.options import model_location_options


@click.group("deploy")
def deploy() -> None:
    """Serve registered models on Kubernetes with Seldon Core (v1) or KServe."""


@deploy.command("render")
@click.argument("name")
@click.option("--target", type=click.Choice(["seldon", "kserve"]), default="seldon",
              show_default=True, help="SeldonDeployment or KServe InferenceService.")
@click.option("--deployment-mode", type=click.Choice(["Serverless", "Knative", "RawDeployment",
                                                      "Standard"]), default="Serverless",
              show_default=True, help="With --target kserve: KServe's deployment mode (a "
              "canary needs Serverless/Knative, or Standard on KServe >= 0.20).")
@click.option("--service-account", help="With --target kserve: service account with the "
              "storage credentials for the model download.")
@click.option("--version", "version", required=True, help="Registered model version to serve.")
@click.option("--model-name", help="Registered model name (default: NAME).")
@click.option("--canary-version", help="Version for a 'canary' predictor.")
@click.option("--canary-traffic", type=int, default=0, show_default=True,
              help="Canary's traffic percentage (with --shadow: mirrored share, 0 = all).")
@click.option("--shadow", is_flag=True, help="Mirror traffic to the canary instead of splitting.")
@click.option("--namespace", default="models", show_default=True)
@model_location_options
@click.option("--replicas", type=int, default=1, show_default=True)
@click.option("--cpu", default="500m", show_default=True)
@click.option("--memory", default="1Gi", show_default=True)
@click.option("--max-rows", type=int, default=10_000, show_default=True)
@click.option("--env-secret", "env_secret", help="Secret with storage credentials "
              "(envSecretRefName) for the model download.")
@click.option("--crd", type=click.Path(dir_okay=False), help="CRD YAML to validate against "
              "(default: $MLEOPS_SELDON_CRD / $MLEOPS_KSERVE_CRD, else the packaged copy).")
@click.option("--no-validate", is_flag=True, help="Skip the CRD validation.")
@click.option("--apply", "do_apply", is_flag=True, help="Create/update it in the cluster.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the YAML here.")
def render_cmd(name, target, deployment_mode, service_account, version, model_name,
               canary_version, canary_traffic, shadow, namespace, tracking_uri, model_uri,
               canary_model_uri, artifacts_destination, image, replicas, cpu, memory,
               max_rows, env_secret, crd, no_validate, do_apply, output) -> None:
    """Print the SeldonDeployment (or InferenceService) NAME serving a model version (and
    optional canary)."""
    from mleops.cli.options import emit_manifest
    from mleops.deploy import IMAGE, SERVER_IMAGE, release_manifest

    if target == "kserve":
        for flag, given in (("--shadow", shadow), ("--env-secret", env_secret)):
            if given:  # KServe mirrors nothing; its storage credentials come from an account
                raise click.UsageError(f"{flag} is for --target seldon (KServe: "
                                       f"{'no traffic mirroring' if flag == '--shadow' else '--service-account'})")
        options = dict(deployment_mode=deployment_mode, service_account=service_account,
                       image=image or IMAGE)
    else:
        if service_account:
            raise click.UsageError("--service-account is for --target kserve")
        options = dict(shadow=shadow, env_secret_ref_name=env_secret,
                       image=image or SERVER_IMAGE)

    model_name = model_name or name
    needs_lookup = model_uri is None or (canary_version is not None and not canary_model_uri)
    registry = None
    if needs_lookup:
        from mleops.registry import Registry

        registry = Registry(tracking_uri or None)
    manifest = release_manifest(
        registry, name, model_name=model_name, version=version, model_uri=model_uri,
        canary_version=canary_version, canary_model_uri=canary_model_uri or None,
        artifacts_destination=artifacts_destination, crd=crd, validate=not no_validate,
        target=target, canary_traffic=canary_traffic, namespace=namespace,
        replicas=replicas, cpu=cpu, memory=memory, max_rows=max_rows, **options)
    emit_manifest(manifest, output)
    if do_apply:
        from mleops.deploy.apply import apply_manifest

        obj = apply_manifest(manifest)
        version_ = (obj or {}).get("metadata", {}).get("resourceVersion", "?")
        click.echo(f"applied {manifest['kind']} {namespace}/{name} (resourceVersion "
                   f"{version_})", err=True)


@deploy.command("traffic")
@click.argument("name")
@click.argument("weights", nargs=-1, required=True)
@click.option("--namespace", default="models", show_default=True)
def traffic_cmd(name, weights, namespace) -> None:
    """Set predictor traffic of SeldonDeployment NAME: WEIGHTS like main=90 canary=10."""
    import json

    from mleops.deploy.apply import set_traffic
    from mleops.errors import DataError

    parsed = {}
    for item in weights:
        pred, sep, value = item.partition("=")
        if not sep or not pred or not value.strip().isdigit():
            raise DataError(f"weight {item!r} is not PREDICTOR=PERCENT (e.g. canary=10)")
        parsed[pred] = int(value)
    obj = set_traffic(name, namespace, parsed)
    click.echo(json.dumps({p["name"]: p.get("traffic", 0) for p in obj["spec"]["predictors"]}))


from mleops.cli.trainjob import render_trainjob_cmd  # noqa: E402 - its own file

deploy.add_command(render_trainjob_cmd)

from mleops.cli.deploy_fleet import fleet_canary_cmd  # noqa: E402 - its own file

deploy.add_command(fleet_canary_cmd)
