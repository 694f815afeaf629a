"""`make run`'s process runner: the Procfile's web, worker and agent under honcho answer
/healthz, and one SIGINT (a terminal's Ctrl-C) stops all of them, qcluster's forked
workers included."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QCLUSTER = ["manage.py", "qcluster"]
MISSING = [name for name in ("honcho", "daphne") if not (BIN / name).exists()]

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "GPUFLEET_STATE_DIR": str(tmp_path / "state"),
        "GPUFLEET_HOST": "127.0.0.1",
        "GPUFLEET_PORT": str(port),
        "GPUFLEET_NODE_NAME": "run-test",
        "GPUFLEET_SIMULATED_GPUS": "1xA100-80GB",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone meanwhile
        return []


def _describe(processes: list[psutil.Process]) -> list[str]:
    return [f"{proc.pid}: {' '.join(_cmdline(proc))}" for proc in processes]


def test_ctrl_c_stops_web_worker_and_agent_with_none_left_behind(tmp_path):
    port = _free_port()
    env = _environment(tmp_path, port)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=180,
    )
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "start", "-f", "Procfile"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    tree = psutil.Process(honcho.pid)
    children: list[psutil.Process] = []
    try:
        assert _wait_until(lambda: _healthz(port) == 200, 90), "no /healthz: " + _log(tmp_path)

        def qcluster_forked() -> bool:
            children[:] = tree.children(recursive=True)
            qcluster = [p for p in _alive(children) if _cmdline(p)[1:] == QCLUSTER]
            return len(qcluster) >= 3  # the cluster, its sentinel and at least one worker

        assert _wait_until(qcluster_forked, 60), "qcluster did not fork: " + _log(tmp_path)
        commands = " ".join(" ".join(_cmdline(p)) for p in _alive(children))
        assert "daphne" in commands and "agent" in commands

        honcho.send_signal(signal.SIGINT)
        stopped = _wait_until(lambda: honcho.poll() is not None and not _alive(children), 15)
        assert stopped, f"left behind: {_describe(_alive([tree, *children]))}\n{_log(tmp_path)}"
        for name in ("web", "worker", "agent"):  # each stopped by itself, none killed
            assert f"{name}.1 stopped (rc=0)" in _log(tmp_path), _log(tmp_path)
    finally:
        for proc in _alive([tree, *children]):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        log.close()


def _log(tmp_path: Path) -> str:
    return (tmp_path / "honcho.log").read_text(errors="replace")[-4000:]


def test_an_agent_stopped_while_it_is_still_starting_exits_cleanly(tmp_path):
    # Ctrl-C right after `make run` reaches the agent before it has installed its own
    # handler; it must still stop with rc 0, as honcho reports it.
    env = _environment(tmp_path, _free_port())
    agent = subprocess.Popen(
        [sys.executable, "manage.py", "agent"], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    time.sleep(0.2)  # well inside Django's start-up
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr.decode(errors="replace")
