"""A scripted OpenAI-like upstream for gateway tests: it streams a first chunk, then
holds the rest until told to go on, and notes when the gateway closes the connection."""

from __future__ import annotations

import asyncio
import json


def chunk(text: str, finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }  # fmt: skip
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class Upstream:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.release = asyncio.Event()
        self.closed = asyncio.Event()
        self.finished = False
        self.requests: list[dict] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        self.requests.append(json.loads(await reader.readexactly(length)))
        if self.status >= 500:
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops")
            await writer.drain()
            writer.close()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        try:
            await self._send(writer, chunk("Hello"))
            waiting = asyncio.ensure_future(self.release.wait())
            gone = asyncio.ensure_future(reader.read(1))  # b"" once the gateway hangs up
            await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                self.closed.set()
                return
            gone.cancel()
            await self._send(writer, chunk(" world", "stop"))
            await self._send(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.finished = True
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed.set()
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
