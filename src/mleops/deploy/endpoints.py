"""The ready endpoints of a Service, from its EndpointSlices (``discovery.k8s.io/v1``): how
a reader reaches every replica of a fleet canary, each of which counts its own evidence."""

from __future__ import annotations

from mleops.deploy.apply import _request, discovery_v1_api


def ready_endpoints(namespace: str, service: str, *, port_name: str = "",
                    api=None) -> list[tuple[str, int]]:
    """(address, port) of each ready endpoint of ``service``: its first address, and the
    slice's port named ``port_name`` (any name: the slice's first port). An endpoint whose
    ``ready`` condition is false (terminating, failing its probe) is left out; an unknown
    condition counts as ready, as the Service's own routing does."""
    api = api or discovery_v1_api()
    found = _request(f"listing the EndpointSlices of Service {namespace}/{service}",
                     api.list_namespaced_endpoint_slice, namespace=namespace,
                     label_selector=f"kubernetes.io/service-name={service}")
    out: list[tuple[str, int]] = []
    for sl in found.items or []:
        ports = [p.port for p in sl.ports or [] if p.port and (not port_name
                                                               or p.name == port_name)]
        if not ports:
            continue
        for ep in sl.endpoints or []:
            if ep.conditions is not None and ep.conditions.ready is False:
                continue
            if ep.addresses:
                out.append((ep.addresses[0], int(ports[0])))
    return sorted(set(out))


__all__ = ["ready_endpoints"]
