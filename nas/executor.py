"""The Ray boundary: where trial work runs. The rest of `nas/` speaks handles, not Ray.

One driver process owns the Optuna study; this module only runs functions on a Ray cluster:

- an embedded local cluster by default (`ray.init(address="local", ...)`, services on 127.0.0.1,
  never attaching to a stale `ray start` cluster), or an existing cluster with `address` /
  `RAY_ADDRESS`;
- each call asks for `cpus` / `gpus`; Ray re-runs a task whose worker or node died up to
  `max_retries` times, while an exception raised by the function itself is returned, not retried;
- `measurer()` starts the measuring worker: one Ray actor that holds its device (a GPU, or a few
  CPU cores) for the whole study and runs one call at a time, so every measurement has that
  device alone while training runs on the rest of the cluster;
- `exclusive_resources()` is what one task needs to have a whole node to itself.

    >>> ex = Executor()                       # embedded local Ray
    >>> ex.start()
    >>> h = ex.submit("math:factorial", 5, cpus=1)
    >>> ex.wait([h], timeout=10) and ex.result(h)
    120
    >>> ex.shutdown()
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

_LOCAL_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local Ray binds 127.0.0.1 only


class TaskLost(Exception):
    """A task produced no result: its worker or node died past the retries, it ran out of memory
    under Ray's monitor, or it was cancelled. `reason` is one line."""

    def __init__(self, reason: str, error: str = "", transient: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.transient = transient      # the actor was unavailable: the call may not have run


class ExecutorError(RuntimeError):
    """Ray could not be started or reached (one line)."""


@dataclass(eq=False)
class Handle:
    """One submitted call."""

    ref: Any
    target: str
    submitted: float = field(default_factory=time.monotonic)
    worker: "Measurer | None" = None      # the actor that runs it (None: a plain task)

    def __hash__(self):
        return id(self)


def _call(target: str, args: tuple, kwargs: dict, sys_path: list[str], threads: int | None):
    """Runs in a Ray worker: make the driver's import paths visible, pin threads, call target."""
    for p in reversed(sys_path):
        if p not in sys.path and os.path.isdir(p):
            sys.path.insert(0, p)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            import torch

            # Reused workers keep the thread count of their first import; pin it per call.
            torch.set_num_threads(threads)
        except ImportError:
            pass
    return resolve(target)(*args, **kwargs)


class _Worker:
    """The measuring worker's actor: runs one call at a time (max_concurrency 1)."""

    def __init__(self, sys_path: list[str]):
        self.sys_path = sys_path

    def call(self, target: str, args: tuple, kwargs: dict, threads: int | None):
        return _call(target, args, kwargs, self.sys_path, threads)


def wants_gpu(device: str, nodes: list[dict]) -> bool:
    """Whether work for the study's `device` takes a GPU: `cuda`/`cuda:N`, or `auto` on a cluster
    with GPUs (the one rule for training slots and the measuring worker)."""
    return device.startswith("cuda") or (device == "auto" and any(n["gpus"] > 0 for n in nodes))


def resolve(target: str):
    """`package.module:attribute` -> the object."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Executor:
    """Runs calls on Ray. Not thread-safe; used by the one driver thread.

    Args:
        address: an existing cluster (`host:port`, `auto`); default `RAY_ADDRESS`, else an
            embedded local cluster.
        num_cpus / num_gpus: size of the embedded cluster (default: this machine's).
        log_to_driver: forward workers' stdout/stderr to this process.
        temp_dir: Ray's session directory root for the embedded cluster.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 num_gpus: int | None = None, log_to_driver: bool = False,
                 temp_dir: str | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.log_to_driver = log_to_driver
        self.temp_dir = temp_dir
        self._owned = False
        self._remote = None
        self._sys_path = [p for p in sys.path if p and os.path.isdir(p)]

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def mode(self) -> str:
        return "cluster" if self.address else "local"

    def start(self) -> None:
        import ray

        if ray.is_initialized():       # an embedding program (or a test) already owns Ray
            self._owned = False
        else:
            common = dict(include_dashboard=False, log_to_driver=self.log_to_driver,
                          logging_level=logging.ERROR, configure_logging=True)
            try:
                if self.address:
                    host = self.address.rsplit(":", 1)[0]
                    node_ip = os.environ.get("RAY_NODE_IP") or (host if host.startswith("127.") else None)
                    kwargs = {"_node_ip_address": node_ip} if node_ip else {}
                    common.pop("include_dashboard")
                    ray.init(address=self.address, **kwargs, **common)
                else:
                    previous = os.environ.get(_LOCAL_LOOPBACK_ENV)
                    os.environ[_LOCAL_LOOPBACK_ENV] = "0"   # local services on 127.0.0.1 only
                    try:
                        ray.init(address="local", num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                 _temp_dir=self.temp_dir, **common)
                    finally:
                        if previous is None:
                            os.environ.pop(_LOCAL_LOOPBACK_ENV, None)
                        else:
                            os.environ[_LOCAL_LOOPBACK_ENV] = previous
            except Exception as e:   # ConnectionError, TimeoutError, RuntimeError, ValueError...
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExecutorError(f"could not start {where}: {msg}") from None
            self._owned = True
        self._remote = ray.remote(_call)

    def shutdown(self) -> None:
        """Stop the embedded cluster (a cluster we only connected to keeps running)."""
        import ray

        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = False

    # ------------------------------------------------------------------------------- resources
    def nodes(self) -> list[dict]:
        """Alive nodes: [{"id", "ip", "cpus", "gpus"}]."""
        import ray

        out = []
        for n in ray.nodes():
            if n.get("Alive"):
                res = n.get("Resources", {})
                out.append({"id": n["NodeID"], "ip": n.get("NodeManagerAddress"),
                            "cpus": float(res.get("CPU", 0)), "gpus": float(res.get("GPU", 0)),
                            "resources": {k: float(v) for k, v in res.items()},
                            "labels": dict(n.get("Labels") or {})})
        return out

    def capacity(self, cpus: float, gpus: float = 0.0, held: dict | None = None) -> int:
        """How many calls of this size fit on the cluster at once (>= 1 when one fits at all).

        `held`: {node id: {"cpus", "gpus"}} taken for good (the measuring worker), not counted.
        """
        total = 0
        for n in self.nodes():
            taken = (held or {}).get(n["id"], {})
            free_cpus = n["cpus"] - taken.get("cpus", 0.0)
            free_gpus = n["gpus"] - taken.get("gpus", 0.0)
            fit = int(free_cpus // cpus) if cpus > 0 else 10 ** 6
            if gpus > 0:
                fit = min(fit, int(free_gpus // gpus))
            total += max(fit, 0)
        return total

    def placeable(self, cpus: float, gpus: float = 0.0, resource: str | None = None,
                  labels: dict | None = None) -> str | None:
        """None when some alive node offers these resources and labels, else why not (one line)."""
        nodes = self.nodes()
        if resource:
            nodes = [n for n in nodes if n["resources"].get(resource, 0) >= 1]
            if not nodes:
                return f"no Ray node offers the custom resource {resource!r} (start the measuring " \
                       f"node with: ray start ... --resources '{{\"{resource}\": 1}}')"
        for key, value in (labels or {}).items():
            nodes = [n for n in nodes if str(n["labels"].get(key)) == str(value)]
            if not nodes:
                return f"no Ray node carries the label {key}={value} (ray start ... --labels {key}={value})"
        if not any(n["cpus"] >= cpus and n["gpus"] >= gpus for n in nodes):
            return f"no Ray node{' with it' if resource or labels else ''} has {cpus:g} CPUs and {gpus:g} GPUs"
        return None

    def measurer(self, *, cpus: float, gpus: float = 0.0, resource: str | None = None,
                 labels: dict | None = None, dedicated: bool = True) -> "Measurer":
        """The measuring worker (see `Measurer`)."""
        if self._remote is None:
            raise ExecutorError("executor not started")
        return Measurer(self, cpus=cpus, gpus=gpus, resource=resource, labels=labels,
                        dedicated=dedicated)

    def exclusive_resources(self, gpu: bool = False) -> dict:
        """Resources that give one call a whole node: every CPU of the largest node (+1 GPU)."""
        nodes = self.nodes()
        if gpu:
            nodes = [n for n in nodes if n["gpus"] >= 1] or nodes
        cpus = max((n["cpus"] for n in nodes), default=1.0)
        return {"cpus": max(cpus, 1.0), "gpus": 1.0 if gpu else 0.0}

    # ----------------------------------------------------------------------------------- calls
    def submit(self, target: str, *args, cpus: float = 1.0, gpus: float = 0.0,
               max_retries: int = 3, threads: int | None = None, resources: dict | None = None,
               label_selector: dict | None = None, **kwargs) -> Handle:
        """Run `target` (`module:function`) with these resources; returns at once.

        `threads` pins torch's thread count in the worker (default: `cpus`, rounded up);
        `resources` are Ray custom resources, `label_selector` node labels the task needs.
        """
        if self._remote is None:
            raise ExecutorError("executor not started")
        threads = threads or max(1, int(-(-cpus // 1)))
        options = dict(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False)
        if resources:
            options["resources"] = dict(resources)
        if label_selector:
            options["label_selector"] = dict(label_selector)
        ref = self._remote.options(**options).remote(target, args, kwargs, self._sys_path, threads)
        return Handle(ref, target)

    def warm(self, count: int, cpus: float, gpus: float = 0.0) -> list[Handle]:
        """Start `count` worker processes of this size (imports done) before any trial, so the
        first trials start together instead of one process start-up apart; returns at once with
        the handles (wait on them, or drop them: a warm-up has no result that matters)."""
        return [self.submit("nas.worker:warm", cpus=cpus, gpus=gpus, max_retries=0)
                for _ in range(count)]

    def wait(self, handles: list[Handle], timeout: float | None) -> list[Handle]:
        """The handles (of `handles`) whose calls have finished, waiting up to `timeout` s."""
        import ray

        if not handles:
            if timeout:
                time.sleep(min(timeout, 0.05))
            return []
        by_ref = {h.ref: h for h in handles}
        # back as soon as one is done (a freed slot is filled at once), with all done by then
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout, fetch_local=False)
        if ready and len(by_ref) > 1:
            ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0, fetch_local=False)
        return [by_ref[r] for r in ready]

    def result(self, handle: Handle):
        """The call's return value; raises `TaskLost` when it produced none."""
        import ray
        from ray import exceptions as rex

        try:
            return ray.get(handle.ref)
        except rex.TaskCancelledError:
            raise TaskLost("cancelled") from None
        except rex.OutOfMemoryError as e:
            raise TaskLost("out of memory (killed by Ray's memory monitor)", _tail(e)) from None
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError) as e:
            raise TaskLost(f"worker died ({type(e).__name__}; Ray's retries exhausted)", _tail(e)) from None
        except rex.RayTaskError as e:     # the wrapper itself failed (e.g. import error in the worker)
            cause = getattr(e, "cause", None) or e
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
            raise TaskLost(f"{type(cause).__name__}: {first}"[:300], _tail(e)) from None
        except rex.ActorUnavailableError as e:    # it died during the call, or was restarting
            raise TaskLost("worker unavailable: it died or was restarting (ActorUnavailableError)",
                           _tail(e), transient=True) from None
        except rex.RayError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TaskLost(f"{type(e).__name__}: {first}"[:300], _tail(e)) from None

    def cancel(self, handle: Handle) -> None:
        """Kill the call's worker (best effort; a lost cluster is ignored). A measuring worker's
        call is stopped by restarting that actor."""
        import ray

        if handle.worker is not None:
            handle.worker.restart()
            return
        try:
            ray.cancel(handle.ref, force=True, recursive=True)
        except Exception:
            pass


class Measurer:
    """The measuring worker: where every latency of a study is measured, one call at a time.

    `dedicated` (the normal case): one Ray actor created with `cpus` CPUs, `gpus` GPUs, the
    custom `resource` and node `labels`, holding them for the whole study, so a measurement has
    its GPU (or its cores) alone while training uses the rest of the cluster. Ray restarts the
    actor when it dies; `restart()` kills it on purpose (a measurement past its timeout).
    Not dedicated (no training slot would be left, e.g. a one-GPU machine): each call is a Ray task
    with the same resources, which Ray starts when they are free, between evaluations.

        >>> m = executor.measurer(cpus=1)
        >>> h = m.submit("nas.worker:run_latency", config, device="cpu", latency=..., num_threads=1)
        >>> executor.wait([h], 60) and executor.result(h)       # doctest: +SKIP
    """

    def __init__(self, executor: Executor, *, cpus: float, gpus: float, resource: str | None,
                 labels: dict | None, dedicated: bool):
        self.executor = executor
        self.cpus, self.gpus, self.dedicated = float(cpus), float(gpus), dedicated
        self.resources = {resource: 1.0} if resource else None
        self.labels = dict(labels or {}) or None
        self._actor = None
        if dedicated:
            self._spawn()

    def _spawn(self) -> None:
        import ray

        options = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=-1,
                       max_task_retries=0, max_concurrency=1)
        if self.resources:
            options["resources"] = self.resources
        if self.labels:
            options["label_selector"] = self.labels
        self._actor = ray.remote(_Worker).options(**options).remote(self.executor._sys_path)

    def submit(self, target: str, *args, threads: int | None = None, max_retries: int = 3,
               **kwargs) -> Handle:
        """Run `target` on the measuring worker; returns at once (calls run in order)."""
        threads = threads or max(1, int(-(-self.cpus // 1)))
        if not self.dedicated:
            return self.executor.submit(target, *args, cpus=self.cpus, gpus=self.gpus,
                                        max_retries=max_retries, threads=threads,
                                        resources=self.resources, label_selector=self.labels,
                                        **kwargs)
        ref = self._actor.call.remote(target, args, kwargs, threads)
        return Handle(ref, target, worker=self)

    def restart(self) -> None:
        """Stop whatever the actor runs (Ray starts a fresh one; queued calls fail as lost)."""
        self._kill(no_restart=False)

    def stop(self) -> None:
        """Release the worker and what it holds (best effort)."""
        self._kill(no_restart=True)
        self._actor = None

    def _kill(self, no_restart: bool) -> None:
        import ray

        if self._actor is not None:
            try:
                ray.kill(self._actor, no_restart=no_restart)
            except Exception:
                pass


def _tail(e: BaseException, limit: int = 2000) -> str:
    return str(e)[-limit:]
