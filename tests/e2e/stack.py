"""Start real gpufleet processes (web, agent) against a throw-away state directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, state_dir: Path, **env: str) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env |= {
            "GPUFLEET_STATE_DIR": str(state_dir),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
        self.env |= env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr.decode()}")
        return done.stdout.decode()

    def create_user(self, username: str, password: str) -> None:
        code = (
            "from django.contrib.auth import get_user_model; "
            f"get_user_model().objects.create_user({username!r}, password={password!r})"
        )
        self.manage("shell", "-c", code)

    def start(self, name: str, *argv: str, **env: str) -> None:
        log = (self.state_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_web(self) -> None:
        daphne = str(Path(PYTHON).with_name("daphne"))
        self.start(
            "web", daphne, "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"
        )
        self.wait_healthy()

    def start_agent(self, node: str, gpus: str) -> None:
        self.start(
            f"agent-{node}",
            PYTHON,
            "manage.py",
            "agent",
            "--node",
            node,
            GPUFLEET_SIMULATED_GPUS=gpus,
        )

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"web did not answer /healthz within {timeout} s")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
