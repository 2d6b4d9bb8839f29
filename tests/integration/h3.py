"""A minimal HTTP/3 client on aioquic: enough to prove that the edge serves h3 end to end."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent


@dataclass
class H3Response:
    alpn: str | None
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Stream:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.alpn: str | None = None
        self.streams: dict[int, _Stream] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.alpn = event.alpn_protocol
        for h3_event in self.http.handle_event(event):
            stream = self.streams.get(getattr(h3_event, "stream_id", -1))
            if stream is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                stream.headers += h3_event.headers
            elif isinstance(h3_event, DataReceived):
                stream.body += h3_event.data
            if getattr(h3_event, "stream_ended", False):
                stream.done.set()

    async def get(self, authority: str, path: str) -> _Stream:
        stream_id = self._quic.get_next_available_stream_id()
        stream = self.streams[stream_id] = _Stream()
        self.http.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"aioquic-test"),
            ],
            end_stream=True,
        )
        self.transmit()
        await stream.done.wait()
        return stream


async def h3_get(port: int, path: str, ca_file: str, server_name: str = "localhost") -> H3Response:
    """GET over QUIC to 127.0.0.1:port (the stack publishes on IPv4 loopback only)."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=server_name
    )
    configuration.load_verify_locations(ca_file)
    async with asyncio.timeout(15):
        async with connect(
            "127.0.0.1", port, configuration=configuration, create_protocol=_H3Protocol
        ) as client:
            assert isinstance(client, _H3Protocol)
            stream = await client.get(f"{server_name}:{port}", path)
            headers = {name.decode(): value.decode() for name, value in stream.headers}
            return H3Response(
                alpn=client.alpn,
                status=int(headers.pop(":status")),
                headers=headers,
                body=bytes(stream.body),
            )
