"""Placement end to end, through the database: 1,000 nodes × 8 simulated 80 GiB GPUs,
5,000 running instances already holding claims, then 1,000 pending deployments placed
by placement passes (``scheduling.placement_pass.do_place_pending``: lock, read the fleet, place,
write claims and instance states), timed from the first pass to the last commit.

    .venv/bin/python bench/placement/end_to_end.py [--nodes 1000] [--pending 1000]
        [--database sqlite|postgres] [--json out.json]

SQLite (default) uses a fresh state directory; ``--database postgres`` uses
``postgres://postgres@127.0.0.1:5432/gpufleet_bench`` (created if missing, emptied).
The start tasks that placement would hand to node workers are not sent (Django-Q is
replaced by a counter): this measures placement, not the queue.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.units import GIB

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PG_URL = "postgres://postgres@127.0.0.1:5432/gpufleet_bench"


def configure(database: str) -> None:
    state = tempfile.mkdtemp(prefix="bench-placement-")
    os.environ["GPUFLEET_STATE_DIR"] = state
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.pop("REDIS_URL", None)
    if database == "postgres":
        import psycopg

        with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS gpufleet_bench")
            conn.execute("CREATE DATABASE gpufleet_bench")
        os.environ["DATABASE_URL"] = PG_URL
    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def model_facts(directory: Path) -> dict[str, Any]:
    from devtools.tiny_gguf import write_tiny_model
    from models_app.gguf import load_model_facts

    (path,) = write_tiny_model(
        directory / "7b.gguf", header_only=True, n_layer=32, n_embd=4096, n_head=32,
        n_head_kv=8, n_ff=11008, n_ctx_train=32768, n_vocab=32000,
    )  # fmt: skip
    return load_model_facts(path, partial=True).to_dict()


def build_fleet(nodes: int, running: int, rng: random.Random) -> Any:
    from django.utils import timezone

    from inventory.models import Gpu, Node
    from models_app.models import CatalogModel, ModelFile
    from scheduling.models import Deployment, GpuClaim, Instance

    now = timezone.now()
    node_rows = Node.objects.bulk_create(
        Node(name=f"n{i:04d}", ram_total=512 * GIB, ram_available=400 * GIB,
             disk_free={"/srv/models": 4000 * GIB}, last_heartbeat=now)
        for i in range(nodes)
    )  # fmt: skip
    gpus = Gpu.objects.bulk_create(
        Gpu(node=node, index=i, uuid=f"GPU-{node.name}-{i}", name="NVIDIA A100-SXM4-80GB",
            memory_total=80 * GIB, memory_used=GIB // 2, priority=rng.choice((40, 50, 60)))
        for node in node_rows for i in range(8)
    )  # fmt: skip
    model = CatalogModel.objects.create(
        display_name="7B", source_kind="hf", hf_repo="acme/7b", hf_filename="7b.gguf",
        files=[{"name": "7b.gguf", "size": 7 * GIB, "sha256": ""}], size_bytes=7 * GIB,
        facts=model_facts(Path(tempfile.mkdtemp())), context_length=32768,
    )  # fmt: skip
    ModelFile.objects.bulk_create(
        ModelFile(model=model, node=node, storage_root="/srv/models",
                  path=f"/srv/models/7b/{node.name}.gguf", state="ready")
        for node in node_rows[: nodes // 2]
    )  # fmt: skip
    busy = Deployment.objects.create(model=model, served_name="busy", replicas=0)
    instances = Instance.objects.bulk_create(
        Instance(deployment=busy, state="running", node_id=gpus[i % len(gpus)].node_id)
        for i in range(running)
    )
    GpuClaim.objects.bulk_create(
        GpuClaim(instance=inst, gpu=gpus[(i * 7919) % len(gpus)], position=0,
                 estimated=(size := rng.randint(2, 40) * GIB), claimed=size)
        for i, inst in enumerate(instances)
    )  # fmt: skip
    return model


def add_pending(model: Any, count: int, rng: random.Random) -> None:
    from scheduling.models import Deployment, Instance

    deployments = Deployment.objects.bulk_create(
        Deployment(model=model, served_name=f"p{i}", n_ctx=rng.choice((2048, 8192, 32768)),
                   priority=rng.randint(0, 100), policy=rng.choice(("binpack", "spread")))
        for i in range(count)
    )  # fmt: skip
    Instance.objects.bulk_create(Instance(deployment=d) for d in deployments)


def place_all(batch: int) -> tuple[float, int, int]:
    from unittest import mock

    from scheduling import placement_pass

    started = time.perf_counter()
    placed = refused = 0
    with mock.patch("scheduling.preparing.do_prepare_start"):
        while True:
            result = placement_pass.do_place_pending(limit=batch)
            placed += len(result.placed)
            refused += len(result.refused)
            if len(result.placed) + len(result.refused) < batch or not result.placed:
                break
    return time.perf_counter() - started, placed, refused


def check(nodes: int) -> dict[str, Any]:

    from inventory.models import Gpu

    over = [
        gpu.pk for gpu in Gpu.objects.with_claims() if gpu.claimed > gpu.memory_total - gpu.reserved
    ]
    return {"gpus": Gpu.objects.count(), "overcommitted_gpus": len(over)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--running", type=int, default=5000)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000, help="instances per pass")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure(args.database)
    rng = random.Random(7)
    t0 = time.perf_counter()
    model = build_fleet(args.nodes, args.running, rng)
    add_pending(model, args.pending, rng)
    setup = time.perf_counter() - t0
    seconds, placed, refused = place_all(args.batch)
    result = {
        "database": args.database, "nodes": args.nodes, "gpus_per_node": 8,
        "running": args.running, "pending": args.pending, "batch": args.batch,
        "setup_s": round(setup, 1), "placement_s": round(seconds, 3), "placed": placed,
        "refused": refused, "per_instance_ms": round(1000 * seconds / max(placed + refused, 1), 2),
        **check(args.nodes),
    }  # fmt: skip
    print("| database | nodes × GPUs | running | pending | placed | time (s) | per instance |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.database} | {args.nodes} × 8 | {args.running} | {args.pending} | {placed} | "
        f"{seconds:.2f} | {result['per_instance_ms']} ms |"
    )
    print(f"overcommitted GPUs: {result['overcommitted_gpus']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
