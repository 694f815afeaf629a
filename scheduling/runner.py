"""Supervise one backend process, detached from whoever started it.

    python -m scheduling.runner --exit-file F --pid-file P --log-file L -- cmd arg...

The process that is started exits at once (its parent reaps it: no zombie in a
Django-Q worker). Its forked child calls ``setsid`` (a new session and process group
whose id is its pid) and becomes the supervisor:

- it forks the server; the server's child side writes the pid file
  ``{"runner_pid": ..., "server_pid": ...}`` (tmp + rename) *before* it execs ``cmd``,
  with stdout and stderr appended to the log file and stdin from /dev/null;
- it forwards SIGTERM and SIGINT to the server and waits for it;
- it writes the exit file (tmp + rename):
  ``{"returncode": int, "signal": "SIGKILL" | null, "finished_at": epoch, "error": str | null}``.
  ``returncode`` is negative for a signal, as in ``subprocess``. When ``cmd`` could not
  be started at all, ``returncode`` is 127 and ``error`` says why.

Standard library only, and no Django: it must start fast and run anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT)
CANNOT_START = 127
_server_pid: int | None = None


def write_json_atomically(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _forward(signum: int, _frame: FrameType | None) -> None:
    if _server_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_server_pid, signum)


def _redirect_stdio(log_file: Path) -> None:
    """stdin from /dev/null, stdout and stderr appended to the log (inherited by the server)."""
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def _exec_server(command: Sequence[str], pid_file: Path, error_pipe: int) -> None:
    """In the forked child: default signal dispositions, the pid file, then exec."""
    try:
        for signum in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        write_json_atomically(pid_file, {"runner_pid": os.getppid(), "server_pid": os.getpid()})
        os.execvp(command[0], list(command))
    except BaseException as exc:  # anything: the parent must learn it, the child must end
        os.write(error_pipe, f"{type(exc).__name__}: {exc}".encode()[:4000])
    os._exit(CANNOT_START)


def _start(command: Sequence[str], pid_file: Path) -> tuple[int, str]:
    """Fork and exec the server: (its pid, why exec failed or "")."""
    global _server_pid
    read_end, write_end = os.pipe()  # close-on-exec: EOF tells the parent exec succeeded
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _exec_server(command, pid_file, write_end)
    _server_pid = pid
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # a pending signal is forwarded now
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    return pid, b"".join(chunks).decode("utf-8", errors="replace")


def _status(wait_status: int) -> tuple[int, str | None]:
    code = os.waitstatus_to_exitcode(wait_status)
    return code, (signal.Signals(-code).name if code < 0 else None)


def supervise(command: Sequence[str], exit_file: Path, pid_file: Path) -> dict[str, object]:
    """Run ``command`` to its end (forwarding signals); what the exit file then says."""
    global _server_pid
    for signum in FORWARDED:
        signal.signal(signum, _forward)
    try:
        pid, error = _start(command, pid_file)
        _, wait_status = os.waitpid(pid, 0)
        _server_pid = None
        returncode, name = _status(wait_status)
    except OSError as exc:  # fork failed
        returncode, name, error = CANNOT_START, None, f"{type(exc).__name__}: {exc}"
    if error:
        returncode, name = CANNOT_START, None
    result: dict[str, object] = {
        "returncode": returncode,
        "signal": name,
        "finished_at": time.time(),
        "error": error or None,
    }
    write_json_atomically(exit_file, result)
    return result


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m scheduling.runner")
    parser.add_argument("--exit-file", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--log-file", type=Path, required=True)
    argv = list(argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command to run after --")
    split = argv.index("--")
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def main(argv: Sequence[str] | None = None) -> None:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    if os.fork() != 0:
        os._exit(0)  # the launcher reaps this one at once
    os.setsid()
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # whatever the launcher blocked
    _redirect_stdio(args.log_file)
    supervise(command, args.exit_file, args.pid_file)
    os._exit(0)


if __name__ == "__main__":
    main()
