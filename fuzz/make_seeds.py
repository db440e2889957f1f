#!/usr/bin/env python3
"""Writes the committed seed corpora: fuzz/corpus/<target>/seed-*.

A few small valid inputs per target, so each fuzzer starts past the first
length check. Run from anywhere; rewrites the seed files it owns and leaves
everything else in the corpus directories alone. The byte layouts of the
roq and rtp programs follow the `arbitrary` crate's encoding (integers
little-endian, a collection element behind a byte whose low bit is 1,
enum variant from a u32) as the targets read them; see docs/fuzzing.md.
"""

import base64
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# -- description --------------------------------------------------------

FP = "sha-256 " + ":".join("%02X" % (i * 7 % 256) for i in range(32))
KEY = base64.b64encode(bytes(range(28))).decode()
SDP = "\r\n".join([
    "v=0",
    "o=- 4215775240449105457 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic: WMS",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1",
    "a=fingerprint:" + FP,
    "a=setup:actpass",
    "a=mid:0",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
    "a=end-of-candidates",
    "",
])


def j(v):
    return json.dumps(v, separators=(",", ":"))


write("description", "rtp-udp-srtp", j({
    "transport": "rtp-udp", "mode": "srtp",
    "offer": {"addr": "127.0.0.1:5004", "ssrcs": [1, 4294967295],
              "srtp": {"suite": "AEAD_AES_128_GCM", "key": KEY}}}))
write("description", "rtp-udp-plain", j({
    "transport": "rtp-udp", "offer": {"addr": "[::1]:5004"}}))
write("description", "quic-offer", j({
    "transport": "quic", "mode": "datagram",
    "offer": {"fingerprint": FP, "alpn": "roq"}}))
write("description", "quic-answer", j({
    "addr": "10.0.0.2:4433", "alpn": "roq", "fingerprint": FP.lower()}))
write("description", "dc-envelope", j({
    "transport": "dc", "mode": "unreliable",
    "offer": {"type": "offer", "sdp": SDP}}))
write("description", "w3c-answer", j({"type": "answer", "sdp": SDP}))
write("description", "sdp", SDP)
write("description", "fingerprint", FP)

# -- roq: max_packet u16, chunk sizes Vec<u8>, wire ----------------------


def varint(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", 0x4000 | v)
    if v < 1 << 30:
        return struct.pack(">I", 0x8000_0000 | v)
    return struct.pack(">Q", 0xC000_0000_0000_0000 | v)


def roq(max_packet, chunks, wire):
    out = struct.pack("<H", max_packet)
    for c in chunks:
        out += bytes([1, c])
    return out + b"\x00" + wire


RTP = bytes([0x80, 96, 0, 1, 0, 0, 0, 10, 0xDE, 0xAD, 0xBE, 0xEF]) + b"payload"
write("roq", "one-chunk", roq(1500, [], varint(7) + varint(len(RTP)) + RTP))
write("roq", "split", roq(1500, [1, 2, 3, 5],
                          varint(300) + b"".join(varint(len(p)) + p for p in [RTP, b"x", RTP])))
write("roq", "long-varints", roq(200, [9],
                                 varint(1 << 40) + bytes([0x40, 3]) + b"abc"))
write("roq", "too-long", roq(4, [], varint(0) + varint(5) + b"abcde"))
write("roq", "truncated", roq(1500, [0, 1], varint(1) + varint(100) + b"short"))

# -- rtp: as a datagram, and as a program of ops -------------------------

write("rtp", "rtp", RTP)
write("rtp", "rtp-csrc-ext", bytes([0x91, 0xE0, 0xFF, 0xFF, 0, 0, 1, 0, 0, 0, 0, 9])
      + b"\x01\x02\x03\x04" + b"\xBE\xDE\x00\x01" + b"\x10\xAA\x00\x00" + b"media")
write("rtp", "rtcp-sr", bytes([0x80, 200, 0, 6, 1, 2, 3, 4]) + bytes(20))
write("rtp", "stun-probe", struct.pack(">HHI", 1, 0, 0x2112A442) + bytes(range(12)))
txid = bytes(range(12))
write("rtp", "stun-reply-v4", struct.pack(">HHI", 0x0101, 12, 0x2112A442) + txid
      + struct.pack(">HHBBH", 0x20, 8, 0, 1, 5004 ^ 0x2112) + bytes([127 ^ 0x21, 0 ^ 0x12, 0 ^ 0xA4, 1 ^ 0x42]))
write("rtp", "stun-goodbye", struct.pack(">HHI", 0x0011, 36, 0x2112A442) + txid
      + struct.pack(">HH", 0xC0DE, 32) + bytes(32))


def variant(k, n=5):
    return struct.pack("<I", (k << 32) // n + 1)


def op_rtp(ssrc, seq, ts, pt, plen, after):
    return variant(0) + struct.pack("<BHIBBH", ssrc, seq, ts, pt, plen, after)


def op_burst(ssrc, seq, step, count, ts_step, after):
    return variant(1) + struct.pack("<BHHBIH", ssrc, seq, step, count, ts_step, after)


def op_protect(ssrc, seq, rtcp, plen):
    return variant(3) + struct.pack("<BHBB", ssrc, seq, int(rtcp), plen)


def op_deliver(which, flip=None):
    return variant(4) + bytes([which]) + (b"\x00" if flip is None else b"\x01" + struct.pack("<H", flip))


head = struct.pack("<BI", 111, 48000) + struct.pack("<H", 1000)
write("rtp", "program-stats", head
      + op_rtp(0, 1000, 0, 96, 20, 20000)
      + op_rtp(0, 1001, 3000, 96, 20, 20000)
      + op_rtp(0, 1003, 9000, 96, 20, 45000)
      + op_rtp(0, 1002, 6000, 96, 20, 1000)
      + op_burst(1, 65500, 1, 100, 960, 20000)
      + op_burst(2, 0, 2999, 200, 3000, 33000))
write("rtp", "program-srtp", head
      + op_protect(0, 1, False, 10)
      + op_protect(0, 2, False, 10)
      + op_protect(1, 0, True, 24)
      + op_protect(0, 1, False, 10)
      + op_deliver(1)
      + op_deliver(0)
      + op_deliver(0)
      + op_deliver(2, 77)
      + op_deliver(2))

# -- signaling: the client side of one HTTP/1.1 connection ---------------

OFFER = j({"transport": "rtp-udp", "offer": {"addr": "127.0.0.1:6004"}})


def post(body, token="t", extra=""):
    return ("POST /v1/sessions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer %s\r\n"
            "content-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (token, extra, len(body), body))


write("signaling", "healthz", "GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
write("signaling", "offer", post(OFFER))
write("signaling", "offer-bad-token", post(OFFER, token="x"))
write("signaling", "offer-expect-continue", post(OFFER, extra="expect: 100-continue\r\n"))
write("signaling", "offer-w3c", post(j({"type": "offer", "sdp": "v=0\r\n"})))
write("signaling", "offer-chunked",
      "POST /v1/sessions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer t\r\n"
      "transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(OFFER), OFFER))
write("signaling", "pipelined",
      post(OFFER) + "GET /v1/sessions HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer t\r\n\r\n"
      "DELETE /v1/sessions/abc HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer t\r\n\r\n")
write("signaling", "stats",
      "GET /v1/sessions/0123456789abcdef/stats HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer t\r\n\r\n")
write("signaling", "metrics", "GET /metrics HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer t\r\n\r\n")
