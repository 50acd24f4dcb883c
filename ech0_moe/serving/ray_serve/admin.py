"""`backend: ray`, the cluster's administration: join it, deploy the Serve application
(`app.py`), read its residency table, delete it. What `ech0-moe serve` does."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ech0_moe.config import PoolConfig, RaySettings
from ech0_moe.errors import BackendError

CONNECT_TIMEOUT_S = 5.0
DEPLOY_TIMEOUT_S = 600.0
CURRENT_CLUSTER_FILE = "/tmp/ray/ray_current_cluster"  # where `ray start --head` leaves its address


def ray_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions
    from ray.serve.exceptions import RayServeException

    return (ray.exceptions.RayError, RayServeException)


def gcs_address(address: str) -> str:
    """The head node's host:port that `address` means (`auto`: $RAY_ADDRESS, else the cluster
    `ray start --head` started on this machine)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            try:
                address = Path(CURRENT_CLUSTER_FILE).read_text().strip()
            except OSError:
                raise BackendError(
                    "Ray is not running on this machine: start a cluster with `ray start --head` "
                    "or set ray.address in experts.yaml"
                ) from None
    return address.removeprefix("ray://")


def connect(settings: RaySettings) -> None:
    """Join the Ray cluster at `settings.address` (once per process); one line if it is not there.
    The head is probed first: `ray.init` would wait minutes for an absent one."""
    import ray

    if ray.is_initialized():
        return
    target = gcs_address(settings.address)
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"Ray is not reachable at {settings.address!r} ({target}: {getattr(exc, 'strerror', None) or exc}); "
            "start a cluster with `ray start --head` or set ray.address in experts.yaml"
        ) from None
    logging.getLogger("ray.serve").setLevel(logging.ERROR)  # replicas replaced etc.: our errors say it
    try:
        ray.init(address=settings.address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendError(f"Ray is not reachable at {settings.address!r}: {str(exc).splitlines()[0]}") from None


def app_handle(settings: RaySettings) -> Any:
    """The deployment handle of the running Serve application `settings.app`."""
    from ray import serve

    connect(settings)
    try:
        return serve.get_app_handle(settings.app)
    except ray_errors() as exc:
        raise BackendError(
            f"Serve application {settings.app!r} is not running on the Ray cluster at {settings.address!r} "
            f"({str(exc).splitlines()[0]}); deploy it with `ech0-moe serve`"
        ) from None


def deploy(config: PoolConfig, *, fresh: bool = False, timeout: float = DEPLOY_TIMEOUT_S) -> None:
    """Deploy (or update in place) the Serve application for `config`; `fresh` replaces it with
    new, empty replicas. Replicas the cluster cannot place are one error line, not a wait."""
    import ray
    from ray import serve

    from ech0_moe.serving.ray_serve.app import build_app

    settings = config.ray_settings()
    connect(settings)
    total = ray.cluster_resources()
    for resource, each in (("CPU", settings.num_cpus), ("GPU", settings.num_gpus)):
        if each and total.get(resource, 0) < each * settings.replicas:
            raise BackendError(
                f"the Ray cluster at {settings.address!r} has {total.get(resource, 0):g} {resource}s in all; "
                f"{settings.replicas} replicas x {each:g} need {each * settings.replicas:g} "
                "(lower ray.replicas or ray.num_cpus/num_gpus, or add nodes)"
            )
    serve.start(proxy_location="Disabled")  # answers travel by handle; no HTTP port is opened
    if fresh:
        serve.delete(settings.app)
    failed: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            serve.run(build_app(config), name=settings.app, route_prefix=None)
        except BaseException as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    end = time.monotonic() + timeout
    while not done.wait(1.0):
        problem = deploy_problem(settings.app)
        if problem or time.monotonic() > end:
            raise BackendError(
                f"Serve application {settings.app!r} is not running: {problem or f'not ready after {timeout:g} s'}"
            )
    if failed:
        raise BackendError(f"Serve application {settings.app!r} failed to deploy: {str(failed[0]).splitlines()[0]}")


def deploy_problem(app: str) -> str:
    """Why the application cannot become ready, from `serve.status()`; empty while it may still."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return ""
    if str(status.status).endswith("DEPLOY_FAILED"):
        return (status.message.strip().splitlines() or ["deploy failed"])[-1]
    for name, deployment in status.deployments.items():
        waiting = re.search(
            r"Resources required for each replica: (\{.*?\}), total resources available: (\{.*?\})", deployment.message
        )
        if waiting and not fits(waiting.group(1), waiting.group(2)):  # else only slow to schedule
            return (
                f"replicas of {name} cannot be placed (each needs {waiting.group(1)}, the cluster has "
                f"{waiting.group(2)} free): free resources (`ray status`; other applications) or lower ray.replicas"
            )
    return ""


def fits(required: str, available: str) -> bool:
    """Whether Ray's "Resources required for each replica: {...}, total resources available: {...}"
    leaves room for a replica (its "taking more than 30 s to schedule" warning says so on a slow machine)."""
    import ast

    try:
        need, have = ast.literal_eval(required), ast.literal_eval(available)
        return all(float(have.get(k, 0)) >= float(v) for k, v in need.items())
    except (ValueError, SyntaxError, TypeError, AttributeError):
        return False


def delete(config: PoolConfig) -> None:
    from ray import serve

    settings = config.ray_settings()
    connect(settings)
    serve.delete(settings.app)


def residency(settings: RaySettings) -> list[dict[str, Any]]:
    """Each live replica's row: replica, node, expert, bytes, budget_bytes, loads, last_load_at ..."""
    from ray import serve

    from ech0_moe.serving.ray_serve.app import RESIDENCY_DEPLOYMENT

    app_handle(settings)  # one clear line when the app is not there
    handle = serve.get_deployment_handle(RESIDENCY_DEPLOYMENT, app_name=settings.app)
    try:
        return list(handle.table.remote().result(timeout_s=30))
    except ray_errors() as exc:
        raise BackendError(f"Ray Serve residency table unavailable: {str(exc).splitlines()[0]}") from None


def dispatch_stats(settings: RaySettings) -> dict[str, Any]:
    """The dispatcher's record (`dispatch.Dispatcher.stats`); empty without one (`ray.fairness: 0`)."""
    from ray import serve

    from ech0_moe.serving.ray_serve.dispatch import DISPATCHER_DEPLOYMENT

    if not settings.fairness:
        return {}
    handle = serve.get_deployment_handle(DISPATCHER_DEPLOYMENT, app_name=settings.app)
    try:
        return dict(handle.stats.remote().result(timeout_s=30))
    except ray_errors() as exc:
        raise BackendError(f"Ray Serve dispatcher unavailable: {str(exc).splitlines()[0]}") from None
