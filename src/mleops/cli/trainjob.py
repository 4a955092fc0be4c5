"""``mleops deploy render-trainjob``: a Kubeflow Trainer v2 TrainJob for a multi-host fit;
print it, create it, wait for it."""

from __future__ import annotations

import json

import click

from mleops.cli.options import fit_column_options


@click.command("render-trainjob")
@click.argument("name")
@click.option("--data", "data_uri", required=True, help="Table the pods fit: an absolute path in "
              "the image or a volume, pvc://CLAIM/path, or s3:// gs:// ... (read by the pods).")
@click.option("--family", required=True, help="Family to fit (as for `mleops fit`).")
@click.option("--nodes", "num_nodes", type=int, default=2, show_default=True,
              help="JAX processes, one pod each.")
@click.option("--runtime", default="mleops-jax", show_default=True,
              help="ClusterTrainingRuntime with the JAX policy (mleops-jax or jax-distributed).")
@click.option("--namespace", default="models", show_default=True)
@click.option("--image", help="Image the pods run (default: mleops' release image).")
@click.option("--cpu", default="1", show_default=True, help="Per pod.")
@click.option("--memory", default="2Gi", show_default=True, help="Per pod.")
@click.option("--gpus", type=int, default=0, show_default=True, help="nvidia.com/gpu per pod.")
@click.option("--env-secret", "env_secret", help="Secret with AWS_* keys for an object-store "
              "--data.")
@click.option("--service-account", help="Service account of the pods (workload identity).")
@click.option("--active-deadline-seconds", type=int, help="Fail the TrainJob after this long.")
@fit_column_options
@click.option("--method", type=click.Choice(["auto", "newton", "lbfgs"]))
@click.option("--result-path", help="Path in the pods for process 0's result JSON.")
@click.option("--crd", type=click.Path(dir_okay=False), help="TrainJob CRD YAML to validate "
              "against (default: $MLEOPS_TRAINJOB_CRD, else the packaged copy).")
@click.option("--no-validate", is_flag=True, help="Skip the CRD validation.")
@click.option("--apply", "do_apply", is_flag=True, help="Create it in the cluster.")
@click.option("--wait", is_flag=True, help="Create it and wait until it completes or fails.")
@click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True,
              help="With --wait: seconds to wait.")
@click.option("--poll", "poll_s", type=float, default=10.0, show_default=True,
              help="With --wait: seconds between status reads.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the YAML here.")
def render_trainjob_cmd(name, data_uri, family, num_nodes, runtime, namespace, image, cpu,
                        memory, gpus, env_secret, service_account, active_deadline_seconds,
                        column, censor_column, covariates, threshold, weights_column, k,
                        method, result_path, crd, no_validate, do_apply, wait, timeout_s,
                        poll_s, output) -> None:
    """Print the TrainJob NAME fitting FAMILY to DATA on --nodes JAX processes."""
    from mleops.cli.options import emit_manifest
    from mleops.deploy import IMAGE
    from mleops.deploy.trainjob import render_trainjob, validate_trainjob

    manifest = render_trainjob(
        name, data_uri=data_uri, family=family, num_nodes=num_nodes, runtime=runtime,
        namespace=namespace, image=image or IMAGE, cpu=cpu, memory=memory, gpus=gpus,
        env_secret_ref_name=env_secret, service_account=service_account,
        active_deadline_seconds=active_deadline_seconds, column=column,
        censor_column=censor_column, covariates=covariates, threshold=threshold,
        weights_column=weights_column, k=k, method=method, output=result_path)
    if not no_validate:
        validate_trainjob(manifest, crd)
    emit_manifest(manifest, output)
    if wait:
        from mleops.deploy.trainjob import submit_and_wait

        status = submit_and_wait(manifest, timeout_s=timeout_s, poll_s=poll_s)
        click.echo(f"TrainJob {namespace}/{name} complete", err=True)
        click.echo(json.dumps(status, default=str), err=True)
    elif do_apply:
        from mleops.deploy.trainjob import create_trainjob

        obj = create_trainjob(manifest)
        version = (obj or {}).get("metadata", {}).get("resourceVersion", "?")
        click.echo(f"created TrainJob {namespace}/{name} (resourceVersion {version})",
                   err=True)

