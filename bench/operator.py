"""The operator under load: N TrainingJobs and N ModelDeployments against their plain children, in one run.

On the test suite's control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and KWOK with 10 fake nodes, ScaleML's CRDs and RBAC installed as the e2e tests do), for each kind
and N, in a fresh namespace each:

- plain: the children the operator would make for N objects (rendered by its own pure builders,
  see operator_kinds) are created directly by this process, each object's in the operator's order,
  with C client threads, as the cluster admin; then again with the operator's ServiceAccount token.
  Converged: every child exists, i.e. the last create was answered.
- operator: a fresh operator process (`scaleml operator --standalone`, as its ServiceAccount); N
  objects are created with the same C threads, while a watch of the kind and one of the child kind
  tell when each converged (status.observedGeneration == metadata.generation, and the Job, or the
  Deployment, exists).

The ratio is the operator's wall time (first create to the last object seen converged) over the
plain one (first create to the last child answered), measured minutes apart on the same cluster;
the second ratio is against the plain run with the operator's identity, which isolates what the
operator adds from what the API server spends on any non-admin's writes (RBAC, the admission policy).
Latency per object: the event that showed it converged arriving, minus its create's answer; for
the plain run, its children's creates from the first sent to the last answered. The
operator's API requests come from kube-apiserver's audit log (its ServiceAccount alone, verb and
resource, a watch counted once), its CPU seconds (user + system) and kube-apiserver's (for the
plain creates as the admin, and for the operator run: what the API server spent on the objects, the
operator and everything they set going) and memory from /proc: RSS idle
after start-up, at N objects (once settled: no request for 5 s), and after every object was
deleted, it settled again and had the time to give memory back (or to replace its process, which the
bench then waits for); the peak is VmHWM, over both processes if it was replaced. Requests and
CPU are per object from the first create until it settled (Jobs run to completion and
Deployments turn ready meanwhile, and the operator follows them), and, in brackets, until the last
object converged. Between runs the namespace is deleted and the bench waits until it is gone.

Where the machine's CPU went is printed too, by process (each control-plane component, the
operator, the bench itself), over the plain creates and from the first create until the last
object converged: on a machine whose CPUs are all busy, the ratio is the CPU the operator run
costs over what the plain creates cost, and the shares say which process to look at.

Run with `make bench` (every size, tens of minutes), or `python bench/operator.py --quick` (N=50).
PYTHONPATH=<dir>/operator:<dir>/api runs another copy of the operator (and of its builders); the
first line printed says which one ran.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final, NamedTuple

# The suite's control plane (tests.support) is imported from the repository root, which the
# sys.path of a script in bench/ lacks.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from operator_api import JSON, METADATA, Api, Created, collection, create_groups
from operator_audit import Request, by_name
from operator_cluster import APISERVER, Cluster, Usage, operator_code, usage
from operator_kinds import WORKLOADS, Convergence, Workload

from scaleml_api.base import API_VERSION
from scaleml_operator.handlers.background import RELEASE_CHECK_SECONDS, REPLACING

DEFAULT_SIZES: Final = {"trainingjobs": (100, 300, 1000), "modeldeployments": (100, 300)}
QUICK_SIZES: Final = (50,)
CONCURRENCY: Final = 8
# No request from the operator for this long: it has done all it was given.
QUIET_SECONDS: Final = 5.0
TIMEOUT_SECONDS: Final = 900.0
KIB_PER_MIB: Final = 1024
OPERATOR: Final = "operator"
BENCH: Final = "bench"


@dataclass(frozen=True)
class Window:
    """The CPU seconds each process spent over `seconds` of wall time, by name: the control plane's
    components, the operator (when it runs) and the bench itself."""

    seconds: float
    cpu: dict[str, float]

    def shares(self) -> str:
        """Each process's part of the machine's CPU time (its CPUs times the wall time), the largest first."""
        capacity = (os.cpu_count() or 1) * self.seconds
        parts = sorted(self.cpu.items(), key=lambda item: -item[1])
        listed = ", ".join(f"{name} {100 * cpu / capacity:.0f}%" for name, cpu in parts)
        busy = 100 * sum(self.cpu.values()) / capacity
        return f"busy {busy:.0f}% of {os.cpu_count()} CPUs for {self.seconds:.1f} s: {listed}"


class Reading(NamedTuple):
    """The clock, and every process's CPU seconds so far."""

    at: float
    cpu: dict[str, float]


def read_cpu(cluster: Cluster, operator_pid: int | None = None) -> Reading:
    cpu = cluster.cpu_seconds()
    cpu[BENCH] = usage(os.getpid()).cpu_seconds
    if operator_pid is not None:
        cpu[OPERATOR] = usage(operator_pid).cpu_seconds
    return Reading(time.time(), cpu)


def window(start: Reading, end: Reading) -> Window:
    return Window(
        end.at - start.at, {name: cpu - start.cpu[name] for name, cpu in end.cpu.items() if name in start.cpu}
    )


@dataclass(frozen=True)
class Plain:
    """The plain run: wall time, and each object's children's creates from the first sent to the last answered;
    and the wall time of the same creates with the operator's identity."""

    seconds: float
    latencies: list[float]
    as_operator_seconds: float
    # Every process's CPU over the admin's creates.
    window: Window


@dataclass(frozen=True)
class Run:
    kind: str
    n: int
    plain: Plain
    # None when not every object converged within the timeout.
    operator_seconds: float | None
    latencies: list[float]
    requests: list[Request]
    converge_requests: int
    # From the namespace's deletion until the operator settled again.
    delete_requests: list[Request]
    # The operator's and kube-apiserver's CPU seconds from the first create until the operator settled.
    cpu_seconds: float
    apiserver_cpu_seconds: float
    # Every process's CPU from the first create until the last object converged.
    converged: Window
    settle_seconds: float
    idle: Usage
    at_n: Usage
    after_delete: Usage
    watched: Watched

    @property
    def converge_cpu_seconds(self) -> float:
        return self.converged.cpu[OPERATOR]

    @property
    def ratio(self) -> float | None:
        return None if self.operator_seconds is None else self.operator_seconds / self.plain.seconds

    @property
    def ratio_same_identity(self) -> float | None:
        """Against the children created with the operator's rights, which the API server checks as it does the
        operator's: its admission policy evaluates every write, where a cluster admin's pass unchecked."""
        return None if self.operator_seconds is None else self.operator_seconds / self.plain.as_operator_seconds

    @property
    def peak_kib(self) -> int:
        """The operator's peak RSS over its whole life (a replaced process starts its count anew)."""
        return max(self.at_n.peak_kib, self.after_delete.peak_kib)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _create_plain(
    cluster: Cluster, api: Api, workload: Workload, n: int, concurrency: int, name: str
) -> tuple[list[Created], Window]:
    """The creates of the plain children, and every process's CPU over them."""
    namespace = f"bench-{workload.key}-{n}-{name}"
    cluster.make_namespace(namespace)
    # Rendered before the clock starts: the operator renders in its reconciles, but the baseline is the API's work.
    groups = [workload.plain_children(f"bench-{i:04d}", namespace) for i in range(n)]
    before = read_cpu(cluster)
    created = create_groups(api, groups, concurrency)
    spent = window(before, read_cpu(cluster))
    cluster.delete_namespace(namespace)
    return created, spent


def _span(created: list[Created]) -> float:
    return max(c.finished for c in created) - min(c.started for c in created)


def plain_run(cluster: Cluster, workload: Workload, n: int, concurrency: int) -> Plain:
    created, cpu = _create_plain(cluster, cluster.api, workload, n, concurrency, "plain")
    as_operator, _ = _create_plain(cluster, cluster.operator_api, workload, n, concurrency, "plain-sa")
    return Plain(_span(created), [c.finished - c.started for c in created], _span(as_operator), cpu)


@dataclass(frozen=True)
class Watched:
    """When each object first converged, when each was created, and what the bench's watches received."""

    seen: dict[str, float]
    created: dict[str, Created]
    events: int
    received: int


def create_and_watch(cluster: Cluster, workload: Workload, namespace: str, n: int, concurrency: int) -> Watched:
    """Creates n objects and waits until all converged (or the timeout passed), watching the objects and children.

    Watches, not LISTs polled every 0.5 s: at N=300 those LISTs returned 265 MiB in 134 s and took
    the API server 127 s to answer, on the two cores the operator runs on; a watch sends each change
    once, and stamps it when it happens rather than at the next poll.
    """
    api, tracker = cluster.api, Convergence(workload)
    names = [f"bench-{i:04d}" for i in range(n)]
    objects = collection(API_VERSION, workload.key, namespace)
    children = collection(workload.child_api_version, workload.child_plural, namespace)
    with (
        api.watch(objects, tracker.on_object, accept=JSON, timeout=TIMEOUT_SECONDS) as object_watch,
        api.watch(children, tracker.on_child, accept=METADATA, timeout=TIMEOUT_SECONDS) as child_watch,
    ):
        created = create_groups(api, [[workload.manifest(name, namespace)] for name in names], concurrency)
        deadline = time.time() + TIMEOUT_SECONDS
        while tracker.count() < n and time.time() < deadline:
            for watch in (object_watch, child_watch):
                if watch.error is not None:
                    raise watch.error
            time.sleep(0.1)
    return Watched(
        dict(tracker.seen),
        dict(zip(names, created, strict=True)),
        object_watch.events + child_watch.events,
        object_watch.received + child_watch.received,
    )


def operator_run(cluster: Cluster, workload: Workload, n: int, concurrency: int, plain: Plain, logs: Path) -> Run:
    namespace = f"bench-{workload.key}-{n}-operator"
    cluster.make_namespace(namespace)
    with cluster.operator(logs / f"operator-{workload.key}-{n}.log") as operator:
        pid = operator.process.pid
        audit = cluster.audit
        audit.wait_quiet(QUIET_SECONDS, TIMEOUT_SECONDS)  # start-up: its first LISTs and WATCHes
        idle, before = usage(pid), read_cpu(cluster, pid)
        start = before.at
        watched = create_and_watch(cluster, workload, namespace, n, concurrency)
        at_converged = read_cpu(cluster, pid)
        converged_at = at_converged.at
        settled_at = audit.wait_quiet(QUIET_SECONDS, TIMEOUT_SECONDS)
        at_n, apiserver_at_n = usage(pid), cluster.apiserver_cpu_seconds()
        requests = audit.between(start, time.time())
        converge_requests = len(audit.between(start, converged_at))
        deleting = time.time()
        cluster.delete_namespace(namespace)
        audit.wait_quiet(QUIET_SECONDS, TIMEOUT_SECONDS)
        # The operator gives memory back one to two of its checks after the last deletion, and may
        # replace its process then (same pid): the new one is measured once it serves and settled.
        time.sleep(3 * RELEASE_CHECK_SECONDS)
        operator.wait_alive()
        audit.wait_quiet(QUIET_SECONDS, TIMEOUT_SECONDS)
        after_delete = usage(pid)
        delete_requests = audit.between(deleting, time.time())
    seen, created = watched.seen, watched.created
    first = min(c.started for c in created.values())
    return Run(
        kind=workload.key,
        n=n,
        plain=plain,
        operator_seconds=max(seen.values()) - first if len(seen) == n else None,
        latencies=[max(0.0, at - created[name].finished) for name, at in seen.items()],
        requests=requests,
        converge_requests=converge_requests,
        delete_requests=delete_requests,
        cpu_seconds=at_n.cpu_seconds - idle.cpu_seconds,
        apiserver_cpu_seconds=apiserver_at_n - before.cpu[APISERVER],
        converged=window(before, at_converged),
        settle_seconds=settled_at - first,
        idle=idle,
        at_n=at_n,
        after_delete=after_delete,
        watched=watched,
    )


def measure(cluster: Cluster, workload: Workload, n: int, concurrency: int, logs: Path) -> Run:
    plain = plain_run(cluster, workload, n, concurrency)
    say(
        f"{workload.key} N={n}: plain children created in {plain.seconds:.1f} s, "
        f"{plain.as_operator_seconds:.1f} s with the operator's identity"
    )
    run = operator_run(cluster, workload, n, concurrency, plain, logs)
    converged = "all converged" if run.operator_seconds is not None else f"{len(run.latencies)}/{n} converged"
    say(f"{workload.key} N={n}: operator {converged}, settled after {run.settle_seconds:.1f} s")
    say(f"  the bench's watches: {run.watched.events} events, {run.watched.received / 2**20:.1f} MiB")
    log = (logs / f"operator-{workload.key}-{n}.log").read_text()
    replaced = "replaced its process after the deletions" if REPLACING in log else "kept its process"
    say(f"  the operator {replaced}")
    return run


def _mib(kib: int) -> float:
    return kib / KIB_PER_MIB


def _or_dash(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def report(runs: list[Run]) -> None:
    print(
        f"{'kind':17} {'N':>5} {'plain s':>8} {'oper. s':>8} {'ratio':>6} {'as op. s':>8} {'ratio':>6} "
        f"{'p50 s':>6} {'p99 s':>6} "
        f"{'plain p50':>9} {'req/obj':>15} {'CPU s/obj':>15} {'RSS MiB idle / N / deleted / peak':>34}"
    )
    for run in runs:
        n = run.n
        latency = run.latencies or [math.nan]
        print(
            f"{run.kind:17} {n:>5} {run.plain.seconds:>8.1f} {_or_dash(run.operator_seconds, '8.1f'):>8} "
            f"{_or_dash(run.ratio, '6.2f'):>6} {run.plain.as_operator_seconds:>8.1f} "
            f"{_or_dash(run.ratio_same_identity, '6.2f'):>6} "
            f"{percentile(latency, 0.5):>6.2f} {percentile(latency, 0.99):>6.2f} "
            f"{statistics.median(run.plain.latencies):>9.3f} "
            f"{f'{len(run.requests) / n:.1f} ({run.converge_requests / n:.1f})':>15} "
            f"{f'{run.cpu_seconds / n:.3f} ({run.converge_cpu_seconds / n:.3f})':>15} "
            f"{_mib(run.idle.rss_kib):>8.0f} / {_mib(run.at_n.rss_kib):.0f} / {_mib(run.after_delete.rss_kib):.0f}"
            f" / {_mib(run.peak_kib):.0f}"
        )
    for run in runs:
        per_object = [
            1000 * seconds / run.n
            for seconds in (
                run.plain.window.cpu[APISERVER],
                run.apiserver_cpu_seconds,
                run.converged.cpu[APISERVER],
            )
        ]
        print(
            f"API server CPU ms per object, {run.kind} N={run.n}: plain {per_object[0]:.1f}, "
            f"with the operator {per_object[1]:.1f} ({per_object[2]:.1f} until converged)"
        )
        print(f"CPU, {run.kind} N={run.n}, plain creates: {run.plain.window.shares()}")
        print(f"CPU, {run.kind} N={run.n}, until the operator converged all: {run.converged.shares()}")
    for run in runs:
        for label, requests in (("", run.requests), (" while deleting", run.delete_requests)):
            counts = ", ".join(f"{name} {count / run.n:.3g}" for name, count in by_name(requests).items())
            print(f"requests per object{label}, {run.kind} N={run.n}: {counts or '-'}")


def as_json(runs: list[Run]) -> dict[str, dict[str, dict[str, Any]]]:
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        result.setdefault(run.kind, {})[str(run.n)] = {
            "ratio": run.ratio,
            "ratio_same_identity": run.ratio_same_identity,
            "requests_per_object": len(run.requests) / run.n,
            "rss_mib": _mib(run.peak_kib),
            "requests_per_object_converged": run.converge_requests / run.n,
            "requests_by_verb": {name: count / run.n for name, count in by_name(run.requests).items()},
            "requests_per_object_deleting": len(run.delete_requests) / run.n,
            "plain_seconds": run.plain.seconds,
            "plain_as_operator_seconds": run.plain.as_operator_seconds,
            "operator_seconds": run.operator_seconds,
            "converged": len(run.latencies),
            "settle_seconds": run.settle_seconds,
            "p50_seconds": percentile(run.latencies, 0.5) if run.latencies else None,
            "p99_seconds": percentile(run.latencies, 0.99) if run.latencies else None,
            "plain_p50_seconds": statistics.median(run.plain.latencies),
            "cpu_seconds_per_object": run.cpu_seconds / run.n,
            "cpu_seconds_per_object_converged": run.converge_cpu_seconds / run.n,
            "apiserver_cpu_seconds_per_object": run.apiserver_cpu_seconds / run.n,
            "apiserver_cpu_seconds_per_object_converged": run.converged.cpu[APISERVER] / run.n,
            "plain_apiserver_cpu_seconds_per_object": run.plain.window.cpu[APISERVER] / run.n,
            # CPU seconds by process (control plane, operator, bench) and the wall time they were spent in.
            "cpu_until_converged": {"seconds": run.converged.seconds, **run.converged.cpu},
            "cpu_plain": {"seconds": run.plain.window.seconds, **run.plain.window.cpu},
            "rss_idle_mib": _mib(run.idle.rss_kib),
            "rss_at_n_mib": _mib(run.at_n.rss_kib),
            "rss_after_delete_mib": _mib(run.after_delete.rss_kib),
        }
    return result


def bench(directory: Path, plan: list[tuple[Workload, int]], concurrency: int) -> tuple[list[Run], bool]:
    """The runs of the plan, in order, and whether all of them completed.

    A run that fails ends the bench, but the ones before it are reported: a large N takes minutes.
    """
    cluster = Cluster(directory)
    runs: list[Run] = []
    try:
        began = time.monotonic()
        cluster.start()
        say(f"control plane with {len(cluster.plane.nodes)} KWOK nodes up in {time.monotonic() - began:.0f} s")
        for workload, n in plan:
            runs.append(measure(cluster, workload, n, concurrency, directory))
    except Exception:  # reported, and the bench exits with 1
        say(f"the run {len(runs) + 1} of {len(plan)} failed:\n{traceback.format_exc()}")
        return runs, False
    finally:
        cluster.stop()
    return runs, True


def _exit(signum: int, _frame: FrameType | None) -> None:
    # As SystemExit, the way out runs the `finally`s that stop the operator and the control plane.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--sizes", type=int, nargs="+", help="N for every kind (default: 100 300 1000 and 100 300)")
    parser.add_argument("--quick", action="store_true", help="N=50 only, to check that the bench works")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="client threads that create objects")
    parser.add_argument("--workdir", type=Path, help="keep the logs (control plane, audit, operator) here")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    plan = [
        (WORKLOADS[kind], n)
        for kind in args.kinds
        for n in (QUICK_SIZES if args.quick else args.sizes or DEFAULT_SIZES[kind])
    ]
    print(f"operator: scaleml_operator from {operator_code()}")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} at the start; {args.concurrency} client threads")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        runs, completed = bench(args.workdir.resolve(), plan, args.concurrency)
    else:
        with tempfile.TemporaryDirectory(prefix="scaleml-bench-operator-") as scratch:
            runs, completed = bench(Path(scratch), plan, args.concurrency)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load} at the end")
    report(runs)
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(runs), indent=2) + "\n")
    if not completed:
        sys.exit(1)


if __name__ == "__main__":
    main()
