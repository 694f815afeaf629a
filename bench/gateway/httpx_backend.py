"""A plain-asyncio network backend for httpx (httpcore), to keep the load generator cheap.

httpx's default backend goes through anyio, which opens a cancel scope (``fail_after``)
around every socket read; at 64 streams × 100 chunks/s that was a third of the load
generator's CPU. This backend reads from an ``asyncio.StreamReader`` directly (an
``asyncio.timeout`` only when httpx gives a read timeout), so the client stays an
ordinary ``httpx.AsyncClient`` — same HTTP/1.1 parser (h11), same API — with less work
per chunk. Plain ``http://`` only (the benchmark talks to 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import httpcore
import httpx


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("https is not supported by the benchmark's asyncio backend")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked of idle keep-alive connections: closed by the peer?
            return self._reader.at_eof() or bool(getattr(self._reader, "_buffer", b""))
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def transport(connections: int, verify: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's own transport (request/response mapping, pool, h11), on this backend.

    httpx does not take a network backend as an argument, so its pool is replaced by an
    identical one that has it; if httpx ever renames ``_pool`` this returns the stock
    transport (anyio backend) instead of failing."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    stock = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
    if isinstance(getattr(stock, "_pool", None), httpcore.AsyncConnectionPool):
        stock._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify,
            max_connections=connections,
            max_keepalive_connections=connections,
            network_backend=AsyncioBackend(),
        )
    return stock
