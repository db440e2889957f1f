#!/usr/bin/env python3
"""A third-party RoQ peer on aioquic, for interop tests of quic-relay.

Speaks draft-ietf-avtcore-rtp-over-quic with its own self-signed
certificate and pins the peer's SHA-256 fingerprint, the way quic-relay
does (a=fingerprint style, "sha-256 AB:CD:...").

Signaling is JSON lines on stdin/stdout:

  --role offerer   prints {"fingerprint", "alpn"}, reads the answer
                   {"addr", "alpn", "fingerprint"}, connects (QUIC client)
  --role answerer  reads the offer {"fingerprint", "alpn"}, listens, prints
                   the answer {"addr", "alpn", "fingerprint"} (QUIC server)

Once connected it
  * sends COUNT RTP packets of SIZE bytes in RoQ datagrams (SSRC 0xD0D0)
    and COUNT on one RoQ unidirectional stream (SSRC 0x5050),
  * echoes every RTP packet it receives the way it came: a datagram back
    as a datagram, a stream packet back on its own stream,
and runs until the other side closes the connection. Logs go to stderr.
"""

import argparse
import asyncio
import datetime
import hashlib
import json
import ssl
import sys

from aioquic import tls
from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    StreamDataReceived,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FLOW_ID = 0
DATAGRAM_SSRC = 0xD0D0
STREAM_SSRC = 0x5050
# aioquic's default UDP payload limit (1,200) leaves ~1,170 bytes for a
# DATAGRAM; RoQ with 1,200-byte RTP needs more, as quic-relay's
# initial_mtu(1452) gives it (see shared/CRATES.md).
MAX_DATAGRAM_SIZE = 1452


def log(*args):
    print("roq_peer:", *args, file=sys.stderr, flush=True)


def fingerprint(der: bytes) -> str:
    return "sha-256 " + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def self_signed():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roq-peer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("roq-peer")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


PINNED = {"fingerprint": None}


def install_pinning():
    """Pins the peer certificate inside the TLS handshake.

    aioquic checks certificates against CAs only, so the pin is a check in
    the handshake itself, before CertificateVerify (whose signature aioquic
    still verifies): a certificate with another fingerprint aborts the
    handshake with a bad_certificate alert, like quic-relay's verifiers.
    aioquic's server asks for a client certificate only through a test
    hook (_request_client_certificate); the answerer role sets it.
    """
    original_set = tls.Context._set_peer_certificate

    def pinned_set(self, certificate):
        original_set(self, certificate)
        der = self._peer_certificate.public_bytes(serialization.Encoding.DER)
        got = fingerprint(der)
        if got != PINNED["fingerprint"]:
            log(f"refusing peer certificate {got}; signaled {PINNED['fingerprint']}")
            raise tls.AlertBadCertificate(f"certificate fingerprint {got} does not match")

    tls.Context._set_peer_certificate = pinned_set

    original_init = tls.Context.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if not self._is_client:
            self._request_client_certificate = True

    tls.Context.__init__ = init


def rtp(ssrc: int, seq: int, size: int) -> bytes:
    header = bytes([0x80, 96]) + seq.to_bytes(2, "big") + (seq * 90).to_bytes(4, "big")
    header += ssrc.to_bytes(4, "big")
    payload = bytes(((seq * 7 + i) & 0xFF) for i in range(size - len(header)))
    return header + payload


def varint(v: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(v)
    return buf.data


class StreamReader:
    """RoQ stream framing: flow id, then (length, packet)*. Pure."""

    def __init__(self):
        self.data = b""
        self.flow = None

    def feed(self, data: bytes):
        self.data += data
        packets = []
        while True:
            buf = Buffer(data=self.data)
            try:
                if self.flow is None:
                    self.flow = buf.pull_uint_var()
                    self.data = self.data[buf.tell():]
                    continue
                length = buf.pull_uint_var()
                packet = buf.pull_bytes(length)
            except BufferReadError:
                return packets
            self.data = self.data[buf.tell():]
            packets.append(packet)


class RoqPeer(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.readers = {}
        self.echo_stream = None
        self.done = asyncio.Event()
        # Not wait_connected(): aioquic 1.x marks a server protocol connected
        # only if someone was already waiting when the handshake completed.
        self.ready = asyncio.Event()
        self.stats = {"datagrams_in": 0, "stream_packets_in": 0}

    def send_stream_packet(self, stream_id: int, packet: bytes):
        self._quic.send_stream_data(stream_id, varint(len(packet)) + packet)

    def new_stream(self) -> int:
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic.send_stream_data(stream_id, varint(FLOW_ID))
        return stream_id

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.ready.set()
        elif isinstance(event, DatagramFrameReceived):
            buf = Buffer(data=event.data)
            flow = buf.pull_uint_var()
            packet = event.data[buf.tell():]
            self.stats["datagrams_in"] += 1
            if flow == FLOW_ID:
                self._quic.send_datagram_frame(varint(FLOW_ID) + packet)
                self.transmit()
        elif isinstance(event, StreamDataReceived):
            reader = self.readers.setdefault(event.stream_id, StreamReader())
            packets = reader.feed(event.data)
            if packets and reader.flow == FLOW_ID:
                if self.echo_stream is None:
                    self.echo_stream = self.new_stream()
                for packet in packets:
                    self.stats["stream_packets_in"] += 1
                    self.send_stream_packet(self.echo_stream, packet)
                self.transmit()
        elif isinstance(event, ConnectionTerminated):
            log(f"connection closed: code {event.error_code} {event.reason_phrase!r}", self.stats)
            self.done.set()

    async def run(self, count: int, size: int):
        stream_id = self.new_stream()
        for seq in range(count):
            self._quic.send_datagram_frame(varint(FLOW_ID) + rtp(DATAGRAM_SSRC, seq, size))
            self.send_stream_packet(stream_id, rtp(STREAM_SSRC, seq, size))
            self.transmit()
            if seq % 10 == 9:
                await asyncio.sleep(0.002)  # paced: datagrams are unreliable
        log(f"sent {count} datagrams and {count} stream packets")
        await self.done.wait()


def configuration(is_client: bool, alpn: str) -> QuicConfiguration:
    cert, key = self_signed()
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[alpn],
        max_datagram_frame_size=65536,
        max_datagram_size=MAX_DATAGRAM_SIZE,
        idle_timeout=20.0,
        # CA checks off: the fingerprint pin (install_pinning) is the check.
        verify_mode=ssl.CERT_NONE,
        server_name="sfu-relay",
    )
    config.certificate = cert
    config.private_key = key
    return config


def emit(obj):
    print(json.dumps(obj), flush=True)


def read_json():
    return json.loads(sys.stdin.readline())


async def offerer(args):
    config = configuration(True, args.alpn)
    own = fingerprint(config.certificate.public_bytes(serialization.Encoding.DER))
    emit({"fingerprint": own, "alpn": args.alpn})
    answer = await asyncio.get_running_loop().run_in_executor(None, read_json)
    PINNED["fingerprint"] = answer["fingerprint"]
    host, port = answer["addr"].rsplit(":", 1)
    async with connect(host, int(port), configuration=config, create_protocol=RoqPeer) as peer:
        log("connected to", answer["addr"])
        await peer.run(args.count, args.size)


async def answerer(args):
    offer = read_json()
    PINNED["fingerprint"] = offer["fingerprint"]
    config = configuration(False, offer["alpn"])
    own = fingerprint(config.certificate.public_bytes(serialization.Encoding.DER))
    peers = []

    def create(*a, **kw):
        peer = RoqPeer(*a, **kw)
        peers.append(peer)
        return peer

    server = await serve("127.0.0.1", 0, configuration=config, create_protocol=create)
    host, port = server._transport.get_extra_info("sockname")[:2]
    emit({"addr": f"{host}:{port}", "alpn": offer["alpn"], "fingerprint": own})
    while not peers:
        await asyncio.sleep(0.001)
    peer = peers[0]
    await peer.ready.wait()
    log("accepted a connection")
    await peer.run(args.count, args.size)
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["offerer", "answerer"], required=True)
    parser.add_argument("--alpn", default="roq")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=1200)
    args = parser.parse_args()
    install_pinning()
    asyncio.run(asyncio.wait_for((offerer if args.role == "offerer" else answerer)(args), 30))


if __name__ == "__main__":
    main()
