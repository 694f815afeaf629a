"""A real worker (``manage.py qcluster``) killed with SIGKILL mid-download: the agent
requeues the download, a new worker resumes it with a Range request, and the file ends
verified with no more than one chunk transferred twice. Runs the processes as
``make run`` does, on a SQLite file of their own."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.units import MIB
from models_app.transfer import READ_SIZE
from tests.transfer.fakehub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
NODE = "kill-test"
pytestmark = pytest.mark.embedded

STAGE = """
from inventory.models import Node
from models_app.actions import do_request_download
from models_app.models import CatalogModel
root = {root!r}
node = Node.objects.create(name={node!r}, disk_free={{root: 100 * 1024**3}})
model = CatalogModel.objects.create(
    display_name="big", source_kind="hf", hf_repo="acme/big", hf_filename="big.gguf",
    files=[{{"name": "big.gguf", "size": {size}, "sha256": ""}}], size_bytes={size},
)
print(do_request_download(model, node).pk.hex)
"""


def settled(path: Path, quiet: float = 0.5) -> bool:
    """The file has not grown for ``quiet`` seconds."""
    size = path.stat().st_size
    time.sleep(quiet)
    return path.stat().st_size == size


def environment(tmp_path: Path, hub: FakeHub) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("Q_CLUSTER_NAME", None)
    return env | {
        "GPUFLEET_STATE_DIR": str(tmp_path / "state"),
        "GPUFLEET_NODE_NAME": NODE,
        "GPUFLEET_STORAGE_ROOTS": str(tmp_path / "models"),
        "GPUFLEET_GPU_PROBE": "none",
        "GPUFLEET_DOWNLOAD_STALL_AFTER": "1",
        "GPUFLEET_WORKERS": "1",
        "HF_ENDPOINT": hub.url,
        "GPUFLEET_FETCH_ALLOW": "127.0.0.0/8",  # the fake hub's CDN
        "PYTHONUNBUFFERED": "1",
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: SIGKILL reaches every worker process
        )


def stop(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM to qcluster's main process (it stops its workers), SIGKILL if it hangs."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def row(tmp_path: Path, copy_id: str) -> tuple[str, int, str, str]:
    with sqlite3.connect(tmp_path / "state" / "gpufleet.sqlite3", timeout=30) as db:
        found = db.execute(
            "SELECT state, bytes_done, sha256, error FROM models_app_modelfile WHERE id = ?",
            (copy_id,),
        ).fetchone()
    assert found is not None
    return found


def wait_until(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.1)


def test_a_download_whose_worker_was_killed_resumes_on_a_new_worker(tmp_path):
    data = os.urandom(24 * MIB)
    log = tmp_path / "workers.log"
    with FakeHub() as hub:
        hub.add_repo("acme/big", {"big.gguf": data})
        hub.faults.rate = 6 * MIB  # about 4 s for the file: mid-file when killed
        env = environment(tmp_path, hub)
        manage(env, "migrate", "--noinput", "-v0")
        script = STAGE.format(root=str(tmp_path / "models"), node=NODE, size=len(data))
        copy_id = manage(env, "shell", "-v0", "-c", script).strip()
        partial = tmp_path / "models" / "acme__big" / "big.gguf.partial"

        first = start_worker(env, log)
        try:
            wait_until(lambda: row(tmp_path, copy_id)[1] >= 4 * MIB, 60, "no progress", log)
            # Let the worker read what the kernel's socket buffers hold (megabytes on a
            # busy machine): what it then loses is only what it had read but not written.
            hub.faults.hold.set()
            wait_until(lambda: settled(partial), 30, "the worker did not drain", log)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        # What reached the killed worker. Once the hold is lifted, its connection's
        # handler goes on writing into the dead socket (the kernel accepts megabytes
        # before it reports the reset): those bytes reach nobody and are not counted.
        delivered_first = hub.body_bytes_served()
        hub.faults.hold.clear()
        kept = partial.stat().st_size
        assert row(tmp_path, copy_id)[0] == "downloading" and kept < len(data)

        hub.faults.rate = None
        second = start_worker(env, log)
        try:
            time.sleep(1.5)  # longer than GPUFLEET_DOWNLOAD_STALL_AFTER
            manage(env, "agent", "--once")  # finds the stalled download, requeues it
            wait_until(lambda: row(tmp_path, copy_id)[0] == "ready", 60, "not ready", log)
        finally:
            stop(second)

        state, done, sha256, error = row(tmp_path, copy_id)
        assert (state, done, error) == ("ready", len(data), "")
        assert sha256 == hashlib.sha256(data).hexdigest()
        killed, resumed = hub.requests("cdn", "GET")
        assert killed.range_start is None
        assert resumed.range_start == kept and resumed.status == 206
        served_twice = delivered_first + resumed.body_bytes - len(data)
        assert 0 <= served_twice <= READ_SIZE, served_twice
    assert (tmp_path / "models" / "acme__big" / "big.gguf").read_bytes() == data
