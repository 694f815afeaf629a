"""Ports of a node's backends: which can be bound now, and which process listens on one.

Plain functions (no Django). Reserving a port among our own instances is the database's
job (``lifecycle.do_reserve_port``: the unique (node, port) constraint arbitrates);
``bindable`` only skips ports that some other program holds at the moment.
"""

from __future__ import annotations

import socket

import psutil


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """The port can be bound now, with SO_REUSEADDR as uvicorn and llama-server do
    (a port in TIME_WAIT counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(low: int, high: int, taken: set[int], host: str = "127.0.0.1") -> int | None:
    """The first port in [low, high] not in ``taken`` that can be bound now (or None).

    Check-then-act: only for tools and tests that start one backend at a time.
    """
    for port in range(low, high + 1):
        if port not in taken and bindable(port, host):
            return port
    return None


def listens_on(pid: int, port: int) -> bool:
    """Process ``pid`` holds a listening TCP socket on ``port`` (any address).

    How readiness proves identity: the server that answers on the port must be the
    process launched for the instance, not another backend that took the port.
    """
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        for conn in connections
    )
