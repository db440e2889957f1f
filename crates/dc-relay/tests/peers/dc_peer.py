"""A plain WebRTC data-channel peer (aiortc) for dc-relay's interop tests.

    dc_peer.py offer reliable|unreliable   # opens the channel
    dc_peer.py answer                      # answers and takes the peer's channel

Either takes `--late-sctp MS`: SCTP starts MS milliseconds after DTLS is up,
and what arrives before is dropped (aiortc has no receiver for it yet), as
in Chromium, which starts SCTP in a task posted once DTLS is up and then sends
its INIT whatever its DTLS role.

Signaling is one line of W3C JSON each way on stdin/stdout
({"type": "offer", "sdp": ...}). Once the channel is open the peer sends
COUNT RTP packets (one binary message each, paced 1 ms apart, built exactly
like `rtp_packet` below so the Rust side can compare byte for byte) and
echoes every binary message it receives. It prints one JSON status line per
event to stdout and exits when stdin closes or after TIMEOUT seconds.
"""

import asyncio
import json
import struct
import sys

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcsctptransport import RTCSctpTransport

COUNT = 50
SSRC = 0x0A1C0DE0
SIZE = 1000
TIMEOUT = 30.0

# aioice leaves 127.0.0.1 out of its host candidates; the tests run on
# loopback, where the relay's candidates are.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def rtp_packet(seq: int) -> bytes:
    """RTP v2, PT 96, timestamp seq*3000, a payload derived from seq."""
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, (seq * 3000) & 0xFFFFFFFF, SSRC)
    return header + bytes((seq + i) % 256 for i in range(SIZE - 12))


def start_sctp_late(delay_ms: int) -> None:
    start = RTCSctpTransport.start

    async def late_start(self, remoteCaps, remotePort):
        await asyncio.sleep(delay_ms / 1000)
        say(event="sctp-start")
        await start(self, remoteCaps, remotePort)

    RTCSctpTransport.start = late_start


def say(**event) -> None:
    print(json.dumps(event), flush=True)


async def read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def wire(channel, done: asyncio.Event) -> None:
    async def send_all():
        for seq in range(COUNT):
            channel.send(rtp_packet(seq))
            await asyncio.sleep(0.001)
        say(event="sent", count=COUNT)

    def on_open():
        say(
            event="open",
            label=channel.label,
            ordered=channel.ordered,
            max_retransmits=channel.maxRetransmits,
        )
        asyncio.ensure_future(send_all())

    @channel.on("message")
    def on_message(message):
        if isinstance(message, bytes):
            channel.send(message)

    @channel.on("close")
    def on_close():
        say(event="closed")
        done.set()

    if channel.readyState == "open":
        on_open()
    else:
        channel.on("open", on_open)


async def main() -> None:
    args = sys.argv[1:]
    if "--late-sctp" in args:
        at = args.index("--late-sctp")
        start_sctp_late(int(args[at + 1]))
        del args[at : at + 2]
    role = args[0]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    done = asyncio.Event()
    if role == "offer":
        unreliable = args[1] == "unreliable"
        kwargs = {"ordered": False, "maxRetransmits": 0} if unreliable else {"ordered": True}
        wire(pc.createDataChannel("aiortc", **kwargs), done)
        # aiortc gathers every candidate in setLocalDescription: non-trickle.
        await pc.setLocalDescription(await pc.createOffer())
        say(type=pc.localDescription.type, sdp=pc.localDescription.sdp)
        answer = json.loads(await read_line())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    else:

        @pc.on("datachannel")
        def on_datachannel(channel):
            wire(channel, done)

        offer = json.loads(await read_line())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        say(type=pc.localDescription.type, sdp=pc.localDescription.sdp)

    # Runs until the test closes stdin (or the channel closes, or time runs out).
    stdin_closed = asyncio.ensure_future(read_line())
    await asyncio.wait(
        [stdin_closed, asyncio.ensure_future(done.wait())],
        timeout=TIMEOUT,
        return_when=asyncio.FIRST_COMPLETED,
    )
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
