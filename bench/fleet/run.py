"""A simulated fleet on PostgreSQL + Redis: 200 nodes × 8 GPUs heartbeating at 1 Hz.

    .venv/bin/python bench/fleet/run.py [--nodes 200] [--workers 4] [--duration 60]
        [--failovers 3] [--json out.json]

Worker processes each drive a share of the nodes with the agent's own code
(``agent.loop.Agent.tick``: simulated probe readings, ``telemetry.record_readings``,
``actions.do_heartbeat``, the lease attempt, the node's supervisor), one tick per node per
second. A separate housekeeper process holds the housekeeper lease and runs the
fleet-wide passes at the agent's cadence. Measured over a window: database writes per
second, connections held, housekeeping pass times, then node loss to replacement
placed. How it works and what it leaves out: ``bench/fleet/README.md``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.units import GIB

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE")
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


# --- shared helpers --------------------------------------------------------------------


class StatementCounter:
    """A Django ``execute_wrapper``: statements sent, by verb."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys((*VERBS, "other"), 0)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 context: dict[str, Any]) -> Any:  # fmt: skip
        verb = sql.lstrip()[:6].upper()
        self.counts[verb if verb in self.counts else "other"] += 1
        return execute(sql, params, many, context)

    def snapshot(self) -> list[int]:
        return list(self.counts.values())


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def node_name(tag: str, index: int) -> str:
    return f"fb{tag}-n{index:03d}"


# --- the worker: many simulated nodes, each ticked by its Agent --------------------------


class _IdleSupervisorPatches:
    """Simulated instances have no processes: the supervisor sees each recorded server
    pid as alive and finds no stray backend processes (no scan of this machine)."""

    @staticmethod
    @contextmanager
    def applied() -> Iterator[None]:
        from unittest import mock

        with (
            mock.patch("scheduling.backend.is_running", lambda pid, instance_id: True),
            mock.patch("scheduling.backend.find_backends", lambda: []),
        ):
            yield


def worker_main(args: argparse.Namespace) -> None:
    setup_django()
    from django.conf import settings
    from django.db import close_old_connections, connection

    from agent.loop import Agent
    from inventory.probe.simulated import SimulatedProbe

    stop = {"now": False}
    victims = list(args.victims)
    stopped: dict[str, float] = {}

    def _term(signum: int, frame: Any) -> None:
        stop["now"] = True

    def _usr1(signum: int, frame: Any) -> None:
        if victims:
            stopped[victims.pop(0)] = time.time()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    signal.signal(signal.SIGUSR1, _usr1)
    counter = StatementCounter()
    interval = args.interval  # real seconds between two ticks of one node
    ticks: list[list[float]] = []
    errors = 0
    with _IdleSupervisorPatches.applied(), connection.execute_wrapper(counter):
        names = [node_name(args.tag, i) for i in range(args.first, args.last)]
        agents = []
        for name in names:
            probe = SimulatedProbe(name, args.spec, settings.STATE_DIR)
            agents.append(Agent(name, "127.0.0.1", probe=probe))
        Path(args.ready).write_text("ready")
        start = time.monotonic() + 0.5
        # The agent's own clock (``tick(now)``) advances 1 s per tick whatever the real
        # interval, so its cadences (lease every 2 ticks, facts every 10, the supervisor's
        # passes ...) and so the work of one tick are those of an agent ticking at 1 Hz.
        base = time.monotonic()
        count = [0] * len(agents)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        # Each node ticks once a second, their phases spread over the second.
        due = [(start + interval * i / len(agents), i) for i in range(len(agents))]
        heapq.heapify(due)
        while not stop["now"] and due:
            when, i = heapq.heappop(due)
            delay = when - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop["now"]:
                break
            agent = agents[i]
            if agent.node_name in stopped:
                continue  # lost: no more ticks, no heartbeat
            close_old_connections()  # as Agent.run does before every tick
            before = counter.snapshot()
            t0, c0 = time.monotonic(), time.process_time()
            wall = time.time()
            try:
                agent.tick(base + count[i] * 1.0)
                count[i] += 1
            except Exception:  # as Agent.run: log and keep going
                errors += 1
                import logging

                logging.getLogger("bench.fleet").exception("tick of %s failed", agent.node_name)
            t1 = time.monotonic()
            after = counter.snapshot()
            ticks.append(
                [wall, t1 - t0, t0 - when, time.process_time() - c0, i]
                + [b - a for a, b in zip(before, after, strict=True)]
            )
            nxt = when + interval
            if nxt < time.monotonic():  # fell behind: no burst to catch up (Agent.run)
                nxt = time.monotonic()
            heapq.heappush(due, (nxt, i))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(args.out).write_text(
        json.dumps(
            {
                "ticks": ticks,
                "errors": errors,
                "stopped": stopped,
                "cpu": usage.ru_utime + usage.ru_stime,
                "nodes": len(names),
            }
        )
    )


# --- the housekeeper: the fleet-wide passes, as the elected agent runs them ----------------


# The bench's housekeeper holds the lease this long (the agent: LEASE_TTL), so that a
# stall of it on a busy machine never hands the role to one of the simulated agents
# (whose ticks may be seconds apart). The agents still look every LEASE_RENEW s.
HOLD_TTL = 120.0


def housekeeper_main(args: argparse.Namespace) -> None:
    setup_django()
    from django.db import close_old_connections, connection

    from agent.loop import LEASE_RENEW, LIVENESS_EVERY
    from core import events
    from inventory import actions, leases
    from scheduling.supervisor import FLEET_EVERY, fleet_housekeeping

    stop = {"now": False}

    def _term(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    holder = f"fleetbench-housekeeper:{os.getpid()}"
    counter = StatementCounter()
    passes: list[list[Any]] = []
    due: dict[str, float] = {}
    held = False

    def is_due(name: str, every: float, now: float) -> bool:
        if now >= due.get(name, 0.0):
            due[name] = now + every
            return True
        return False

    def timed(kind: str, func: Callable[[], Any]) -> None:
        before = counter.snapshot()
        wall, t0, c0 = time.time(), time.monotonic(), time.process_time()
        func()
        dur, cpu = time.monotonic() - t0, time.process_time() - c0
        stmts = sum(b - a for a, b in zip(before, counter.snapshot(), strict=True))
        passes.append([kind, wall, dur, cpu, stmts])

    def liveness() -> None:
        actions.do_mark_stale_nodes_offline()
        actions.do_apply_maintenance_windows()

    interval = 1.0  # the agent's tick
    next_tick = time.monotonic()
    with connection.execute_wrapper(counter):
        while not stop["now"]:
            close_old_connections()
            now = time.monotonic()
            if is_due("lease", LEASE_RENEW, now):
                held = leases.hold(leases.HOUSEKEEPER, holder, HOLD_TTL)
                if held and not Path(args.ready).exists():
                    Path(args.ready).write_text(holder)
            if held and Path(args.go).exists():
                if is_due("liveness", LIVENESS_EVERY, now):
                    timed("liveness", liveness)
                events.resend_kept()
                if is_due("fleet", FLEET_EVERY, now):
                    timed("fleet", fleet_housekeeping)
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < 0:
                next_tick, delay = time.monotonic(), 0
            time.sleep(delay)
        leases.release(leases.HOUSEKEEPER, holder)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(args.out).write_text(
        json.dumps({"passes": passes, "cpu": usage.ru_utime + usage.ru_stime, "holder": holder})
    )


# --- setup: nodes, a model held by every node, deployments with running instances ----------


def model_facts(directory: Path) -> dict[str, Any]:
    from devtools.tiny_gguf import write_tiny_model
    from models_app.gguf import load_model_facts

    (path,) = write_tiny_model(
        directory / "7b.gguf", header_only=True, n_layer=32, n_embd=4096, n_head=32,
        n_head_kv=8, n_ff=11008, n_ctx_train=32768, n_vocab=32000,
    )  # fmt: skip
    return load_model_facts(path, partial=True).to_dict()


def build_fleet(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    from unittest import mock

    from django.db.models import Count
    from django.utils import timezone

    from inventory import actions
    from inventory.probe.simulated import SimulatedProbe
    from models_app.models import CatalogModel, ModelFile
    from scheduling import placement_pass
    from scheduling.fleet import default_kind
    from scheduling.models import Deployment, Instance

    rng = random.Random(args.seed)
    nodes = []
    for i in range(args.nodes):
        name = node_name(args.tag, i)
        probe = SimulatedProbe(name, args.spec, state)
        node = actions.do_register_node(name, "127.0.0.1", probe.devices(), probe.message)
        nodes.append(actions.do_heartbeat(node))
    model = CatalogModel.objects.create(
        display_name="7B", source_kind="hf", hf_repo="acme/7b", hf_filename="7b.gguf",
        files=[{"name": "7b.gguf", "size": 7 * GIB, "sha256": ""}], size_bytes=7 * GIB,
        facts=model_facts(state), context_length=32768,
    )  # fmt: skip
    ModelFile.objects.bulk_create(
        ModelFile(model=model, node=node, storage_root="/srv/models",
                  path=f"/srv/models/7b/{node.name}.gguf", state="ready")
        for node in nodes
    )  # fmt: skip
    kind = default_kind(model)
    deployments = []
    for i in range(args.deployments):
        replicas = rng.choice((1, 2, 3, 4))
        on_demand = i % 4 == 0 and replicas > 1  # some scale to demand: idle release has work
        deployments.append(
            Deployment(
                model=model, served_name=f"d{i:02d}", kind=kind, replicas=replicas,
                min_replicas=1 if on_demand else replicas, demand=replicas,
                idle_timeout=24 * 3600, n_ctx=rng.choice((4096, 8192, 16384)),
                policy=rng.choice(("binpack", "spread")),
            )
        )  # fmt: skip
    Deployment.objects.bulk_create(deployments)
    now = timezone.now()
    Instance.objects.bulk_create(
        Instance(deployment=d, pending_since=now) for d in deployments for _ in range(d.replicas)
    )
    with mock.patch("scheduling.preparing.do_prepare_start"):
        result = placement_pass.do_place_pending()
    for n, instance in enumerate(result.placed):
        Instance.objects.filter(pk=instance.pk).update(
            state="running", server_pid=400000 + n, started_at=now, ready_at=now
        )
    hosts = (
        Instance.objects.filter(state="running")
        .values("node__name")
        .annotate(n=Count("pk"))
        .order_by("-n", "node__name")
    )
    victims = [row["node__name"] for row in hosts[: args.failovers]]
    return {
        "instances": len(result.placed),
        "refused": len(result.refused),
        "deployments": len(deployments),
        "victims": victims,
    }


# --- measuring -------------------------------------------------------------------------


DB_STATS = (
    "xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
    "tup_fetched", "tup_returned", "blks_read", "blks_hit",
)  # fmt: skip


def db_stats(maintenance: str, dbname: str) -> dict[str, float]:
    import psycopg

    with psycopg.connect(maintenance, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT {', '.join(DB_STATS)} FROM pg_stat_database WHERE datname = %s", [dbname]
        ).fetchone()
    assert row is not None
    return {key: float(value) for key, value in zip(DB_STATS, row, strict=True)} | {
        "t": time.monotonic()
    }


def backends(conn: Any, dbname: str) -> list[int]:
    """Server pids of the connections to the bench's database."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [dbname])
    return [int(row[0]) for row in rows.fetchall()]


class ServiceCpu:
    """CPU of PostgreSQL and Redis processes over the window, sampled every second per
    pid: a backend that ends (connections are renewed after ``CONN_MAX_AGE``) keeps
    what it used up to its last sample; one that starts counts from zero. PostgreSQL is
    split into the backends of the bench's database, the server's shared processes
    (WAL writer, checkpointer, ...), and other databases' backends (other work)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.ours: set[int] = set()
        self.started = False

    def sample(self, ours: list[int]) -> None:
        import psutil

        self.ours.update(ours)
        for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            name = process.info["name"] or ""
            times = process.info["cpu_times"]
            if times is None or not name.startswith(("postgres", "redis")):
                continue
            cpu = times.user + times.system
            pid = process.pid
            if pid not in self.kind:
                self.kind[pid] = _service_kind(name, process.info["cmdline"] or [])
                self.first[pid] = cpu if not self.started else 0.0
            self.last[pid] = cpu
        self.started = True

    def cores(self, seconds: float) -> dict[str, float]:
        out = {"postgres_ours": 0.0, "postgres_shared": 0.0, "postgres_other_dbs": 0.0,
               "redis": 0.0}  # fmt: skip
        for pid, last in self.last.items():
            kind = self.kind[pid]
            if kind == "postgres_backend":
                kind = "postgres_ours" if pid in self.ours else "postgres_other_dbs"
            out[kind] += (last - self.first[pid]) / seconds
        return out


def _service_kind(name: str, cmdline: list[str]) -> str:
    if name.startswith("redis"):
        return "redis"
    title = " ".join(cmdline)
    # a backend's title: "postgres: USER DATABASE HOST(PORT) STATE"
    if title.startswith("postgres: ") and ("(" in title or "[local]" in title):
        return "postgres_backend"
    return "postgres_shared"


def cpu_of(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def machine_busy() -> float:
    import psutil

    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def timezone_now() -> Any:
    from django.utils import timezone

    return timezone.now()


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: list[Any]) -> None:
    limit = time.monotonic() + timeout
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a child process exited ({proc.returncode}) while {what}")
        if time.monotonic() > limit:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def measure_failover(victim: str, worker: Any, timeout: float) -> dict[str, Any]:
    """Stop ``victim``'s ticks and wait until every instance it ran has a replacement
    placed on another node."""
    from scheduling.models import Instance

    lost = list(
        Instance.objects.filter(node__name=victim, state="running").values_list("pk", flat=True)
    )
    signalled = time.time()
    worker.send_signal(signal.SIGUSR1)
    limit = time.monotonic() + timeout
    placed: list[Any] = []
    while time.monotonic() < limit:
        rows = list(
            Instance.objects.filter(replaces__in=lost, node__isnull=False)
            .exclude(node__name=victim)
            .values("replaces_id", "placed_at", "created_at", "node__name")
        )
        if len({row["replaces_id"] for row in rows}) >= len(lost):
            placed = rows
            break
        time.sleep(0.1)
    from inventory.models import Alert, Node

    node = Node.objects.get(name=victim)
    last = node.last_heartbeat
    alerts = Alert.objects.filter(node=node, kind="node_offline", raised_at__gte=last)
    offline = alerts.order_by("raised_at").first()
    result: dict[str, Any] = {
        "node": victim,
        "instances": len(lost),
        "replaced": len(placed),
        "signalled": signalled,
        "last_heartbeat": last.timestamp() if last else None,
        "offline_at": offline.raised_at.timestamp() if offline else None,
    }
    if placed and last:
        result["created"] = max(row["created_at"] for row in placed).timestamp()
        result["placed"] = max(row["placed_at"] for row in placed).timestamp()
        result["placed_first"] = min(row["placed_at"] for row in placed).timestamp()
        result["to_nodes"] = sorted({row["node__name"] for row in placed})
    return result


# --- orchestration ---------------------------------------------------------------------


def child_env(args: argparse.Namespace, state: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "GPUFLEET_STATE_DIR": str(state),
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "GPUFLEET_HEARTBEAT_TIMEOUT": str(args.heartbeat_timeout),
        "GPUFLEET_FAILOVER_AFTER": str(args.failover_after),
        "GPUFLEET_DB_CONN_MAX_AGE": str(args.conn_max_age),
        "GPUFLEET_STORAGE_ROOTS": str(state / "models"),
        "GPUFLEET_NODE_NAME": f"fb{args.tag}-driver",
        "PYTHONUNBUFFERED": "1",
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    args.tag = uuid.uuid4().hex[:6]
    args.profile_out = Path(tempfile.gettempdir()) / f"bench-fleet-{args.tag}.pstats"
    dbname = f"gpufleet_fleetbench_{args.tag}"
    maintenance = args.postgres_url
    database_url = urlsplit(maintenance)._replace(path=f"/{dbname}").geturl()
    state = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    procs: list[subprocess.Popen[bytes]] = []
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        env = child_env(args, state, database_url)
        os.environ.update(env)
        setup_django()
        from django.core.management import call_command

        print(f"database {dbname}, state {state}", flush=True)
        if args.profile:
            print(f"profile of the first worker: {args.profile_out}", flush=True)
        call_command("migrate", verbosity=0)
        t0 = time.monotonic()
        fleet = build_fleet(args, state)
        fleet["setup_s"] = round(time.monotonic() - t0, 1)
        print(f"fleet: {json.dumps(fleet)}", flush=True)
        me = [sys.executable, str(Path(__file__).resolve())]
        logs = state / "logs"
        logs.mkdir()

        def spawn(role: str, *extra: str) -> subprocess.Popen[bytes]:
            log = (logs / f"{role.strip('_')}{len(procs)}.log").open("wb")
            proc = subprocess.Popen(
                [*me, role, "--tag", args.tag, *extra], env=env, cwd=REPO, stdout=log, stderr=log
            )
            procs.append(proc)
            return proc

        go = state / "hk.go"
        hk = spawn(
            "_housekeeper", "--out", str(state / "hk.json"), "--ready", str(state / "hk.ready"),
            "--go", str(go),
        )  # fmt: skip
        wait_for("the housekeeper takes the lease", (state / "hk.ready").exists, 60, [hk])
        workers: list[subprocess.Popen[bytes]] = []
        owner: dict[str, subprocess.Popen[bytes]] = {}
        share = -(-args.nodes // args.workers)
        for w in range(args.workers):
            first, last = w * share, min(args.nodes, (w + 1) * share)
            mine = [v for v in fleet["victims"] if first <= int(v.rsplit("n", 1)[1]) < last]
            proc = spawn(
                "_worker", "--first", str(first), "--last", str(last), "--spec", args.spec,
                "--out", str(state / f"w{w}.json"), "--ready", str(state / f"w{w}.ready"),
                "--interval", str(args.interval),
                *(["--profile", str(args.profile_out)] if args.profile and w == 0 else []),
                *(["--victims", *mine] if mine else []),
            )  # fmt: skip
            workers.append(proc)
            owner.update(dict.fromkeys(mine, proc))
        ready = [state / f"w{w}.ready" for w in range(args.workers)]
        wait_for("the workers start", lambda: all(p.exists() for p in ready), 300, procs)
        # The fleet-wide passes start once every node has ticked: the heartbeats of
        # setup must not make nodes look lost while the workers start.
        from django.db.models import Min

        from inventory.models import Node

        started = timezone_now()
        wait_for(
            "every node ticks once",
            lambda: (Node.objects.aggregate(m=Min("last_heartbeat"))["m"] or started) > started,
            600,
            procs,
        )
        go.write_text("go")
        print(f"workers ticking; warm-up {args.warmup} s", flush=True)
        time.sleep(args.warmup)
        # --- the window
        driving = [p.pid for p in workers]
        services = ServiceCpu()
        c_workers, c_hk = cpu_of(driving), cpu_of([hk.pid])
        busy0, me0 = machine_busy(), cpu_of([os.getpid()])
        s0 = db_stats(maintenance, dbname)
        w_start = time.time()
        held: list[int] = []
        with psycopg.connect(maintenance, autocommit=True) as conn:
            services.sample(backends(conn, dbname))
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                time.sleep(1.0)
                pids = backends(conn, dbname)
                held.append(len(pids))
                services.sample(pids)
        s1 = db_stats(maintenance, dbname)
        w_end = time.time()
        seconds = s1["t"] - s0["t"]
        cpu = {
            "workers": (cpu_of(driving) - c_workers) / seconds,
            "housekeeper": (cpu_of([hk.pid]) - c_hk) / seconds,
            **services.cores(seconds),
            "bench_main": (cpu_of([os.getpid()]) - me0) / seconds,
            "machine": (machine_busy() - busy0) / seconds,
        }
        cpu["others"] = cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine")
        db = {k: (s1[k] - s0[k]) / seconds for k in DB_STATS}
        from datetime import UTC, datetime

        from inventory.models import Alert

        flapped = Alert.objects.filter(
            kind="node_offline",
            raised_at__gte=datetime.fromtimestamp(w_start, UTC),
            raised_at__lt=datetime.fromtimestamp(w_end, UTC),
        ).count()
        print(f"window done ({seconds:.1f} s); failovers", flush=True)
        # --- node loss to replacement placed
        failovers = []
        for victim in fleet["victims"]:
            timeout = args.heartbeat_timeout + args.failover_after + 90
            result = measure_failover(victim, owner[victim], timeout)
            failovers.append(result)
            print(f"failover: {json.dumps(result, default=str)}", flush=True)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        worker_data = [json.loads((state / f"w{w}.json").read_text()) for w in range(args.workers)]
        hk_data = json.loads((state / "hk.json").read_text())
        return summarise(args, fleet, worker_data, hk_data, db, held, cpu, failovers,
                         (w_start, w_end), seconds, flapped)  # fmt: skip
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        try:
            from django.db import connections as django_connections

            django_connections.close_all()
        except Exception:
            pass
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        _clean_redis(args.redis_url, args.tag)
        if args.keep:
            print(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def _clean_redis(url: str, tag: str) -> None:
    """Remove the task queues of the simulated nodes (start tasks no worker took)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"*fb{tag}*", count=1000))
    if keys:
        client.delete(*keys)


def summarise(
    args: argparse.Namespace,
    fleet: dict[str, Any],
    workers: list[dict[str, Any]],
    hk: dict[str, Any],
    db: dict[str, float],
    held: list[int],
    cpu: dict[str, float],
    failovers: list[dict[str, Any]],
    window: tuple[float, float],
    seconds: float,
    flapped: int,
) -> dict[str, Any]:
    w0, w1 = window
    ticks = [t for w in workers for t in w["ticks"] if w0 <= t[0] < w1]
    durations = [t[1] for t in ticks]
    lateness = [max(0.0, t[2]) for t in ticks]
    tick_cpu = [t[3] for t in ticks]
    stmts = [sum(t[5 + k] for t in ticks) for k in range(5)]
    passes = [p for p in hk["passes"] if w0 <= p[1] < w1]
    fleet_p = [p[2] for p in passes if p[0] == "fleet"]
    live_p = [p[2] for p in passes if p[0] == "liveness"]
    both = fleet_p + live_p

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "n": len(values),
            "p50": round(1000 * pct(values, 50), 1),
            "p99": round(1000 * pct(values, 99), 1),
            "max": round(1000 * max(values), 1) if values else float("nan"),
        }

    fo = []
    for f in failovers:
        if "placed" in f:
            total = f["placed"] - f["last_heartbeat"]
            settings_s = args.heartbeat_timeout + args.failover_after
            fo.append(f | {"loss_to_placed_s": round(total, 2),
                           "reaction_s": round(total - settings_s, 2)})  # fmt: skip
        else:
            fo.append(f)
    return {
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "fleet": fleet,
        "window_s": round(seconds, 1),
        "node_ticks_per_s": round(len(ticks) / seconds, 1),
        "target_ticks_per_s": args.nodes,
        "tick_ms": ms(durations),
        "tick_cpu_ms_mean": round(1000 * statistics.fmean(tick_cpu), 2) if tick_cpu else None,
        "tick_lateness_ms": ms(lateness),
        "tick_errors": sum(w["errors"] for w in workers),
        "nodes_marked_offline_in_window": flapped,
        "statements_per_s": dict(
            zip((*VERBS, "other"), (round(s / seconds, 1) for s in stmts), strict=True)
        ),
        "statements_per_tick": round(sum(stmts) / max(len(ticks), 1), 1),
        "statements_per_tick_by_verb": [round(x / max(len(ticks), 1), 2) for x in stmts],
        "writes_per_tick": round(sum(stmts[1:4]) / max(len(ticks), 1), 2),
        "db_per_s": {k: round(v, 1) for k, v in db.items()},
        "connections": {"min": min(held), "median": statistics.median(held), "max": max(held)},
        "cpu_cores": {k: round(v, 3) for k, v in cpu.items()},
        "housekeeping_ms": {
            "fleet_housekeeping": ms(fleet_p),
            "liveness": ms(live_p),
            "all": ms(both),
        },
        "housekeeping_cpu_ms_p50": round(
            1000 * pct([p[3] for p in passes if p[0] == "fleet"], 50), 1
        )
        if fleet_p
        else None,
        "housekeeping_statements_p50": pct([p[4] for p in passes if p[0] == "fleet"], 50),
        "failovers": fo,
    }


def markdown(r: dict[str, Any]) -> str:
    a = r["args"]
    hk = r["housekeeping_ms"]
    db = r["db_per_s"]
    st = r["statements_per_s"]
    cpu = r["cpu_cores"]
    lines = [
        f"Fleet: {a['nodes']} nodes × {a['spec']}, {r['fleet']['deployments']} deployments, "
        f"{r['fleet']['instances']} running instances; {a['workers']} worker processes; "
        f"window {r['window_s']} s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| node ticks / s (target {a['nodes']} / {a['interval']} s = "
        f"{a['nodes'] / a['interval']:.0f}) | {r['node_ticks_per_s']} |",
        f"| tick wall ms p50 / p99 | {r['tick_ms']['p50']} / {r['tick_ms']['p99']} |",
        f"| tick CPU ms (mean, driving process) | {r['tick_cpu_ms_mean']} |",
        f"| tick lateness ms p50 / p99 | {r['tick_lateness_ms']['p50']} / "
        f"{r['tick_lateness_ms']['p99']} |",
        f"| commits / s (pg_stat_database) | {db['xact_commit']} "
        f"(rollbacks {db['xact_rollback']}) |",
        f"| rows inserted / updated / deleted per s | {db['tup_inserted']} / {db['tup_updated']} "
        f"/ {db['tup_deleted']} |",
        f"| statements / s sent (SELECT / INSERT / UPDATE / DELETE / other) | {st['SELECT']} / "
        f"{st['INSERT']} / {st['UPDATE']} / {st['DELETE']} / {st['other']} |",
        f"| statements per node tick (writes) | {r['statements_per_tick']} "
        f"({r['writes_per_tick']}) |",
        f"| nodes marked offline during the window (should be 0) | "
        f"{r['nodes_marked_offline_in_window']} |",
        f"| connections held (min / median / max) | {r['connections']['min']} / "
        f"{r['connections']['median']} / {r['connections']['max']} |",
        f"| fleet_housekeeping ms p50 / p99 / max (n) | {hk['fleet_housekeeping']['p50']} / "
        f"{hk['fleet_housekeeping']['p99']} / {hk['fleet_housekeeping']['max']} "
        f"({hk['fleet_housekeeping']['n']}) |",
        f"| liveness pass ms p50 / p99 / max (n) | {hk['liveness']['p50']} / "
        f"{hk['liveness']['p99']} / {hk['liveness']['max']} ({hk['liveness']['n']}) |",
        f"| CPU, cores: workers / housekeeper / PostgreSQL (this database's backends + shared "
        f"processes) / Redis | {cpu['workers']} / {cpu['housekeeper']} / "
        f"{cpu['postgres_ours']} + {cpu['postgres_shared']} / {cpu['redis']} |",
        f"| CPU, cores: whole machine / other work on it | {cpu['machine']} / {cpu['others']} |",
        "",
        "| lost node | instances | replaced | last heartbeat → all placed | minus timeout + "
        "failover after |",
        "|---|---|---|---|---|",
    ]
    for f in r["failovers"]:
        lines.append(
            f"| {f['node']} | {f['instances']} | {f['replaced']} | "
            f"{f.get('loss_to_placed_s', '–')} s | {f.get('reaction_s', '–')} s |"
        )
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    worker = sub.add_parser("_worker")
    worker.add_argument("--tag", required=True)
    worker.add_argument("--first", type=int, required=True)
    worker.add_argument("--last", type=int, required=True)
    worker.add_argument("--spec", required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--ready", required=True)
    worker.add_argument("--victims", nargs="*", default=[])
    worker.add_argument("--interval", type=float, default=1.0)
    worker.add_argument("--profile", default="")
    hk = sub.add_parser("_housekeeper")
    hk.add_argument("--tag", required=True)
    hk.add_argument("--out", required=True)
    hk.add_argument("--ready", required=True)
    hk.add_argument("--go", required=True)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--spec", default="8xA100-80GB", help="each node's simulated GPUs")
    parser.add_argument("--workers", type=int, default=4, help="processes driving the nodes")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="real seconds between two ticks of one node (each tick still does the work of "
        "a 1 Hz tick); raise it where the machine cannot drive the fleet at 1 Hz",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the first worker")
    parser.add_argument("--deployments", type=int, default=40)
    parser.add_argument("--duration", type=float, default=60.0, help="window, seconds")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--failovers", type=int, default=3, help="nodes lost one after another")
    parser.add_argument("--heartbeat-timeout", type=float, default=10.0)
    parser.add_argument("--failover-after", type=float, default=5.0)
    parser.add_argument("--conn-max-age", type=int, default=60, help="as the Procfile's agent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES,
                        help="a database to connect to for CREATE/DROP DATABASE")  # fmt: skip
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the state dir and its logs")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.role == "_worker":
        worker_main(args)
        return 0
    if args.role == "_housekeeper":
        housekeeper_main(args)
        return 0
    result = orchestrate(args)
    print(json.dumps(result, indent=2, default=str))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
