"""A lean HTTP/1.1 client for the load generators: asyncio streams and httptools' C parser.

The load generator shares the cores with the server it measures. httpx (h11, pure
Python) took 3.6-4.7 ms of CPU per request against ``model=nearest`` at 256x256
here, this client 0.5 ms: with httpx the generator took about a fifth of the two
cores the servers were measured on (srserve and its peers alike). Keep-alive
connections are pooled per client; a connection the server closes, or an answer
cut short, raises :class:`TransportError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httptools

TIMEOUT_S = 600.0


class TransportError(Exception):
    """The connection failed or closed before a whole answer arrived (counted as lost)."""


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]  # names lower-cased
    content: bytes


@dataclass
class _Parsing:
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    done: bool = False
    keep_alive: bool = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class LeanClient:
    """POSTs to ``base_url`` over pooled keep-alive connections (from ``local_address`` when given)."""

    def __init__(self, base_url: str, *, local_address: str | None = None) -> None:
        url = urlsplit(base_url)
        self.host, self.port, self.netloc = url.hostname or "127.0.0.1", url.port or 80, url.netloc
        self.local_address = local_address
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

    async def post(self, path: str, *, params: dict | None, body: bytes, content_type: str) -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {self.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        try:
            async with asyncio.timeout(TIMEOUT_S):
                return await self._exchange(head + body)
        except (OSError, EOFError, httptools.HttpParserError, TimeoutError) as e:
            raise TransportError(f"{type(e).__name__}: {e}") from e

    async def _exchange(self, request: bytes) -> Response:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            local = (self.local_address, 0) if self.local_address else None
            reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=local, limit=1 << 22)
        parsing = _Parsing()
        parser = httptools.HttpResponseParser(parsing)
        try:
            writer.write(request)
            await writer.drain()
            while not parsing.done:
                data = await reader.read(1 << 20)
                if not data:
                    raise EOFError("the server closed the connection before the whole answer")
                parser.feed_data(data)
        except BaseException:
            writer.close()
            raise
        if parser.should_keep_alive():
            self._idle.append((reader, writer))
        else:
            writer.close()
        return Response(parser.get_status_code(), parsing.headers, b"".join(parsing.body))
