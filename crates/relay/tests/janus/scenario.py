#!/usr/bin/env python3
"""Two real Janus SFUs joined by `relay`, with aiortc at both ends.

    aiortc publisher --WebRTC--> Janus A videoroom --rtp_forward--> relay offer
        --link (TRANSPORT MODE)--> relay answer --> Janus B streaming mountpoint
        --WebRTC--> aiortc viewer (decodes, reads the frame number painted in each frame)

Run inside a network namespace of the test's own (tests/janus.rs makes it): Janus skips
loopback interfaces when it gathers ICE candidates, so everything here talks over
NS_IP, an address on a veth interface inside the namespace (a `dummy` interface would do
too, but that kernel module is not always there; a veth pair always is).

The publisher paints its frame number into every frame (16 blocks of black or white plus
their inverse, which survives VP8 at any quality) and records when it handed each frame
to the encoder; the viewer reads the number back from every decoded frame. So "frames the
publisher sent from T on" and "which of them the viewer decoded" are both exact.

Scenarios, for the direct baseline and every `relay transports` line:
  a  late viewer: the forward runs; the viewer joins 3 s later. Measured from 1 s after
     the viewer's WebRTC connection is up.
  b  forward added to a live stream: the viewer already watches the (silent) mountpoint;
     then the rtp_forward is created. Measured from 1 s after Janus answered rtp_forward.
Either way the viewer only gets a picture when a keyframe request (PLI/FIR) reaches the
publisher: aiortc's VP8 encoder otherwise sends a keyframe every 3,000 frames, and the
room has no fir_freq on purpose.

Prints one JSON line per scenario on stdout; everything else goes to stderr and to log
files in --workdir (janus-a.log, janus-b.log, relay-*.log).

Usage (as root, inside the namespace):
    scenario.py --workdir DIR --ip 10.77.0.1 --iface sfr0 [--relay PATH] [--only direct,quic]
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtpreceiver import RTCRtpReceiver

# --- What is measured -------------------------------------------------------------------

WIDTH, HEIGHT = 320, 240  # small: the publisher encodes and the viewer decodes in Python
SETTLE_S = 1.0  # the criterion starts this long after the viewer joined / the forward was added
MEASURE_S = 7.0  # then counts this many seconds of frames (about 210 at 30 fps)
GRACE_S = 0.7  # and waits this much longer for the last ones to cross both SFUs
LATE_VIEWER_S = 3.0  # scenario a: the forward runs this long before the viewer joins
LIVE_BEFORE_FORWARD_S = 2.0  # scenario b: the viewer watches this long before the forward
PASS_RATIO = 0.95

# Payload types on the forwarded legs (rtp_forward rewrites to these; the mountpoint
# expects them; the answering relay routes by them).
AUDIO_PT, VIDEO_PT = 111, 100
CLOCK_RATES = {AUDIO_PT: 48000, VIDEO_PT: 90000}

ROOM = 4242
BITS = 16
BLOCK_W = WIDTH // BITS
ROW_H = 40  # each of the two barcode rows; the rest of the frame is grey


def log(*args):
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    print(f"[{stamp}]", *args, file=sys.stderr, flush=True)


# --- Frames that carry their own number --------------------------------------------------


class NumberedVideoTrack(VideoStreamTrack):
    """30 fps frames with the frame number painted in; remembers when each was sent."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.sent_at = []  # index -> time.monotonic() when handed to the encoder
        self._chroma = None

    def _luma(self, n):
        bits = [(n >> (BITS - 1 - i)) & 1 for i in range(BITS)]
        row = bytes(itertools.chain.from_iterable([235 if b else 16] * BLOCK_W for b in bits))
        inv = bytes(itertools.chain.from_iterable([16 if b else 235] * BLOCK_W for b in bits))
        grey = bytes([128]) * WIDTH
        return row * ROW_H + inv * ROW_H + grey * (HEIGHT - 2 * ROW_H)

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        fill_plane(frame.planes[0], self._luma(self.count % (1 << BITS)), WIDTH, HEIGHT)
        for p in frame.planes[1:]:
            fill_plane(p, bytes([128]) * ((WIDTH // 2) * (HEIGHT // 2)), WIDTH // 2, HEIGHT // 2)
        frame.pts, frame.time_base = pts, time_base
        self.sent_at.append(time.monotonic())
        self.count += 1
        return frame


def fill_plane(plane, data, width, height):
    stride = plane.line_size
    if stride != width:
        data = b"".join(data[r * width : (r + 1) * width] + bytes(stride - width) for r in range(height))
    plane.update(data)


def read_number(frame):
    """The frame number painted by NumberedVideoTrack, or None if the frame does not carry one."""
    if frame.width != WIDTH or frame.height != HEIGHT:
        frame = frame.reformat(width=WIDTH, height=HEIGHT)
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    y = frame.planes[0]
    buf = bytes(y)
    stride = y.line_size
    n = 0
    for i in range(BITS):
        x = i * BLOCK_W + BLOCK_W // 2
        top = buf[(ROW_H // 2) * stride + x]
        bottom = buf[(ROW_H + ROW_H // 2) * stride + x]
        bit = top > 128
        if bit == (bottom > 128):
            return None  # the row and its inverse disagree: not one of ours, or damaged
        n = (n << 1) | int(bit)
    return n


# Count keyframe requests (PLI or FIR) that reach the publisher's RTP sender.
KEYFRAME_REQUESTS = []  # time.monotonic() of each
_orig_send_keyframe = RTCRtpSender._send_keyframe


def _counting_send_keyframe(self):
    KEYFRAME_REQUESTS.append(time.monotonic())
    log("publisher: keyframe requested")
    return _orig_send_keyframe(self)


RTCRtpSender._send_keyframe = _counting_send_keyframe

# And the PLIs the viewer sends to Janus B (aiortc sends one when a frame fails to decode).
VIEWER_PLIS = []  # time.monotonic() of each
_orig_send_pli = RTCRtpReceiver._send_rtcp_pli


async def _counting_send_pli(self, media_ssrc):
    VIEWER_PLIS.append(time.monotonic())
    if len(VIEWER_PLIS) < 2 or VIEWER_PLIS[-1] - VIEWER_PLIS[-2] > 0.5:
        log("viewer: sends PLI (and more, every frame that fails to decode)")
    return await _orig_send_pli(self, media_ssrc)


RTCRtpReceiver._send_rtcp_pli = _counting_send_pli


# --- Janus over its HTTP API (janus.transport.http) --------------------------------------


class JanusError(Exception):
    pass


def _http(url, body=None, timeout=10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _tx():
    return "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


class JanusSession:
    """One Janus session; a background long poll delivers asynchronous plugin events."""

    def __init__(self, base, name):
        self.base = base  # http://IP:PORT/janus
        self.name = name
        self.id = None
        self.pending = {}  # transaction -> Future
        self.events = []  # events without a waiting transaction (webrtcup, media, hangup...)
        self._poller = None

    async def open(self):
        r = await self._post(self.base, {"janus": "create"})
        self.id = r["data"]["id"]
        self._poller = asyncio.create_task(self._poll())
        return self

    async def attach(self, plugin):
        r = await self._post(f"{self.base}/{self.id}", {"janus": "attach", "plugin": plugin})
        return r["data"]["id"]

    async def message(self, handle, body, jsep=None, timeout=15.0):
        """Sends a plugin request; returns (plugin data, jsep) from the sync reply or the event."""
        tx = _tx()
        fut = asyncio.get_running_loop().create_future()
        self.pending[tx] = fut
        msg = {"janus": "message", "body": body, "transaction": tx}
        if jsep is not None:
            msg["jsep"] = jsep
        try:
            r = await self._post(f"{self.base}/{self.id}/{handle}", msg, tx=tx)
            if r.get("janus") == "ack":
                r = await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(tx, None)
        data = r.get("plugindata", {}).get("data", {})
        if "error" in data or r.get("janus") == "error":
            raise JanusError(f"{self.name}: {body.get('request')} failed: {data or r.get('error')}")
        return data, r.get("jsep")

    async def close(self):
        if self._poller:
            self._poller.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"{self.base}/{self.id}", {"janus": "destroy"})

    async def _post(self, url, body, tx=None):
        body = dict(body, transaction=tx or body.get("transaction") or _tx())
        r = await asyncio.to_thread(_http, url, body)
        if r.get("janus") == "error":
            raise JanusError(f"{self.name}: {body.get('janus')} failed: {r.get('error')}")
        return r

    async def _poll(self):
        while True:
            try:
                evs = await asyncio.to_thread(_http, f"{self.base}/{self.id}?maxev=10", None, 40.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Janus gone or timed out: keep polling until cancelled
                log(f"{self.name}: long poll: {e}")
                await asyncio.sleep(0.2)
                continue
            for ev in evs if isinstance(evs, list) else [evs]:
                fut = self.pending.get(ev.get("transaction"))
                if fut is not None and not fut.done() and ev.get("janus") != "ack":
                    fut.set_result(ev)
                elif ev.get("janus") != "keepalive":
                    self.events.append((time.monotonic(), ev))


# --- Processes -----------------------------------------------------------------------------


class Procs:
    """Every process this run started; all are stopped on every path."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, logfile, stdout=subprocess.DEVNULL):
        log(f"start {name}: {' '.join(argv)}")
        f = open(logfile, "ab")
        p = subprocess.Popen(argv, stdout=stdout, stderr=f, stdin=subprocess.DEVNULL)
        p.name, p.logfile = name, logfile
        self.procs.append(p)
        return p

    def stop(self, p, grace=3.0):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with contextlib.suppress(ValueError):
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p, grace=1.0)


def read_line(p, prefix, timeout):
    """The first stdout line of p starting with prefix (bounded wait)."""
    out = {}

    def reader():
        for raw in p.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(prefix):
                out["line"] = line
                break
        # keep draining so the child never blocks on a full pipe
        for _ in p.stdout:
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and "line" not in out:
        if p.poll() is not None:
            break
        time.sleep(0.02)
    if "line" not in out:
        raise RuntimeError(f"{p.name} printed no `{prefix}` line within {timeout} s "
                           f"(exit {p.poll()}); see {p.logfile}:\n{tail(p.logfile)}")
    return out["line"]


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Ports:
    """UDP/TCP ports on IP that were free a moment ago, never the same twice in a run."""

    def __init__(self, ip):
        self.ip = ip
        self.used = set()

    def udp(self):
        return self._free(socket.SOCK_DGRAM)

    def tcp(self):
        return self._free(socket.SOCK_STREAM)

    def _free(self, kind):
        while True:
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind((self.ip, 0))
                port = s.getsockname()[1]
            if port not in self.used:
                self.used.add(port)
                return port


# --- Janus configuration -------------------------------------------------------------------

JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"


def janus_lib():
    for cand in (JANUS_LIB, "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus"):
        if os.path.isdir(os.path.join(cand, "plugins")):
            return cand
    raise RuntimeError("Janus plugins not found (install Debian's `janus` package)")


def write_janus_config(root, name, http_port, rtp_range, plugin, ip, iface):
    """A config folder with only what this instance needs: the HTTP transport and one
    plugin (symlinked into its own folders, so Janus loads nothing else and starts fast)."""
    lib = janus_lib()
    conf = os.path.join(root, f"janus-{name}")
    for sub in ("conf", "plugins", "transports", "none"):
        os.makedirs(os.path.join(conf, sub), exist_ok=True)
    os.symlink(os.path.join(lib, "plugins", f"libjanus_{plugin}.so"),
               os.path.join(conf, "plugins", f"libjanus_{plugin}.so"))
    os.symlink(os.path.join(lib, "transports", "libjanus_http.so"),
               os.path.join(conf, "transports", "libjanus_http.so"))
    c = os.path.join(conf, "conf")
    with open(os.path.join(c, "janus.jcfg"), "w") as f:
        f.write(f"""general: {{
	configs_folder = "{c}"
	plugins_folder = "{conf}/plugins"
	transports_folder = "{conf}/transports"
	events_folder = "{conf}/none"
	loggers_folder = "{conf}/none"
	debug_level = 4
	debug_timestamps = true
	server_name = "sfu-relay-test-{name}"
	interface = "{ip}"	# the address in SDP; Janus finds none by itself here
	session_timeout = 0
	protected_folders = []
}}
media: {{
	rtp_port_range = "{rtp_range}"
}}
nat: {{
	# Janus skips loopback interfaces; the test's namespace gives it exactly one other
	# interface, and ICE only gathers there.
	ice_enforce_list = "{iface}"
	ignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
events: {{
	broadcast = false
}}
""")
    with open(os.path.join(c, "janus.transport.http.jcfg"), "w") as f:
        f.write(f"""general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {http_port}
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
""")
    # Plugins start empty: the room and mountpoints are created over the API.
    with open(os.path.join(c, f"janus.plugin.{plugin}.jcfg"), "w") as f:
        f.write("general: {\n}\n")
    return c


async def start_janus(procs, workdir, name, http_port, rtp_range, plugin, ip, iface):
    conf = write_janus_config(workdir, name, http_port, rtp_range, plugin, ip, iface)
    p = procs.start(f"janus {name}", ["janus", "-F", conf, "-o"], os.path.join(workdir, f"janus-{name}.log"),
                    stdout=open(os.path.join(workdir, f"janus-{name}.log"), "ab"))
    base = f"http://{ip}:{http_port}/janus"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"janus {name} exited with {p.returncode}:\n"
                               f"{tail(os.path.join(workdir, f'janus-{name}.log'))}")
        try:
            info = await asyncio.to_thread(_http, f"{base}/info", None, 1.0)
            log(f"janus {name} up: {info.get('version_string')} on {base}")
            return base
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"janus {name} did not answer on {base} within 20 s")


# --- Peers ---------------------------------------------------------------------------------


def rtc_config():
    # No STUN: aiortc would otherwise try a public server; host candidates are all we need.
    return RTCConfiguration(iceServers=[])


async def wait_connected(pc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"WebRTC connection {pc.connectionState} (waited {timeout} s)")
        await asyncio.sleep(0.02)
    return time.monotonic()


class Publisher:
    """aiortc → Janus A videoroom: VP8 (numbered frames) + Opus (silence)."""

    def __init__(self, janus_base):
        self.base = janus_base
        self.video = NumberedVideoTrack()
        self.pc = None
        self.session = None

    async def start(self):
        s = self.session = await JanusSession(self.base, "janus A").open()
        self.handle = await s.attach("janus.plugin.videoroom")
        await s.message(self.handle, {
            "request": "create", "room": ROOM, "description": "sfu-relay test",
            "publishers": 1, "audiocodec": "opus", "videocodec": "vp8",
            # No fir_freq: a periodic keyframe request would hide a relay that loses them.
        })
        data, _ = await s.message(self.handle, {"request": "join", "ptype": "publisher",
                                                "room": ROOM, "display": "aiortc"})
        self.publisher_id = data["id"]
        pc = self.pc = RTCPeerConnection(rtc_config())
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        vt = pc.addTransceiver(self.video, direction="sendonly")
        vt.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                if c.mimeType in ("video/VP8", "video/rtx")])
        await pc.setLocalDescription(await pc.createOffer())
        data, jsep = await s.message(self.handle, {"request": "publish", "audio": True, "video": True},
                                     jsep={"type": "offer", "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
        await wait_connected(pc)
        # Which mid is which: Janus's answer lists the published streams.
        self.mids = {st["type"]: st["mid"] for st in data.get("streams", [])}
        if "audio" not in self.mids or "video" not in self.mids:
            self.mids = {t.kind: t.mid for t in pc.getTransceivers()}
        log(f"publisher {self.publisher_id} live in room {ROOM}, mids {self.mids}")

    async def forward(self, ip, video, audio):
        """rtp_forward (Janus 1.x `streams` API). video/audio: (port, rtcp_port) or None."""
        streams = []
        for kind, pt, ports in (("audio", AUDIO_PT, audio), ("video", VIDEO_PT, video)):
            if ports is None:
                continue
            st = {"mid": self.mids[kind], "port": ports[0], "pt": pt}
            if ports[1]:
                st["rtcp_port"] = ports[1]
            streams.append(st)
        req = {"request": "rtp_forward", "room": ROOM, "publisher_id": self.publisher_id,
               "host": ip, "streams": streams}
        data, _ = await self.session.message(self.handle, req)
        log(f"rtp_forward: {json.dumps(req)} -> {json.dumps(data.get('forwarders'))}")
        return [f["stream_id"] for f in data.get("forwarders", [])]

    async def stop_forward(self, stream_ids):
        for sid in stream_ids:
            with contextlib.suppress(JanusError):
                await self.session.message(self.handle, {
                    "request": "stop_rtp_forward", "room": ROOM,
                    "publisher_id": self.publisher_id, "stream_id": sid})

    async def close(self):
        if self.pc:
            await self.pc.close()
        if self.session:
            await self.session.close()


class Mountpoint:
    """An rtp mountpoint on Janus B: audio and video on their own ports, each with its own RTCP port."""

    _ids = itertools.count(100)

    def __init__(self, janus_base, ports):
        self.base = janus_base
        self.id = next(self._ids)
        self.audio = (ports.udp(), ports.udp())
        self.video = (ports.udp(), ports.udp())

    async def create(self):
        s = self.session = await JanusSession(self.base, "janus B").open()
        self.handle = await s.attach("janus.plugin.streaming")
        req = {"request": "create", "type": "rtp", "id": self.id, "description": f"relay {self.id}",
               "media": [
                   {"type": "audio", "mid": "a", "port": self.audio[0], "rtcpport": self.audio[1],
                    "pt": AUDIO_PT, "codec": "opus"},
                   {"type": "video", "mid": "v", "port": self.video[0], "rtcpport": self.video[1],
                    "pt": VIDEO_PT, "codec": "vp8"},
               ]}
        await s.message(self.handle, req)
        log(f"mountpoint: {json.dumps(req)}")

    async def destroy(self):
        with contextlib.suppress(Exception):
            await self.session.message(self.handle, {"request": "destroy", "id": self.id})
        await self.session.close()


class Viewer:
    """aiortc ← Janus B streaming: records the number and decode time of every video frame."""

    def __init__(self, janus_base, mountpoint_id):
        self.base = janus_base
        self.mp = mountpoint_id
        self.decoded = []  # (time.monotonic(), frame number or None, key_frame)
        self.tasks = []
        self.pc = None
        self.session = None

    async def join(self):
        s = self.session = await JanusSession(self.base, "janus B viewer").open()
        handle = await s.attach("janus.plugin.streaming")
        _, offer = await s.message(handle, {"request": "watch", "id": self.mp})
        pc = self.pc = RTCPeerConnection(rtc_config())
        audio_sink = MediaBlackhole()

        @pc.on("track")
        def on_track(track):
            if track.kind == "video":
                self.tasks.append(asyncio.create_task(self._count(track)))
            else:
                audio_sink.addTrack(track)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        await audio_sink.start()
        self.audio_sink = audio_sink
        await s.message(handle, {"request": "start"},
                        jsep={"type": "answer", "sdp": pc.localDescription.sdp})
        return await wait_connected(pc)

    async def _count(self, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            n = read_number(frame)
            if not self.decoded:
                log(f"viewer: first frame decoded (number {n})")
            self.decoded.append((time.monotonic(), n, bool(getattr(frame, "key_frame", False))))

    async def close(self):
        for t in self.tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.audio_sink.stop()
        if self.pc:
            await self.pc.close()
        if self.session:
            await self.session.close()


# --- The relay -----------------------------------------------------------------------------


class RelayPair:
    """`relay answer` into the mountpoint and `relay offer` to it, one stream spec per medium."""

    def __init__(self, procs, relay, workdir, ip, ports, transport, mode, mountpoint):
        self.procs, self.relay, self.workdir, self.ip = procs, relay, workdir, ip
        self.transport, self.mode, self.mp = transport, mode, mountpoint
        # The offerer's local sockets, where Janus A forwards: (media port, RTCP port).
        self.video_in = (ports.udp(), ports.udp())
        self.audio_in = (ports.udp(), ports.udp())
        self.signal_port = ports.tcp()
        self.answer = self.offer = None

    def _log(self, side):
        return os.path.join(self.workdir, f"relay-{self.transport}-{self.mode}-{self.mp.id}-{side}.log")

    def start(self):
        ip = self.ip
        clock = [a for pt, hz in CLOCK_RATES.items() for a in ("--clock-rate", f"{pt}={hz}")]
        # Answering side: each --out is a destination, the mountpoint's media port with its
        # RTCP port; packets are routed to it by payload type.
        outs = ["--out", f"{ip}:{self.mp.video[0]},rtcp={self.mp.video[1]},pt={VIDEO_PT}",
                "--out", f"{ip}:{self.mp.audio[0]},rtcp={self.mp.audio[1]},pt={AUDIO_PT}"] + clock
        # Offering side: each --in is bound; Janus A's forwarder sends RTP to the first port and
        # announces its RTCP socket on the second, where the relay sends keyframe requests back.
        ins = ["--in", f"{ip}:{self.video_in[0]},rtcp={self.video_in[1]}",
               "--in", f"{ip}:{self.audio_in[0]},rtcp={self.audio_in[1]}"] + clock
        # The relay's own debug lines are few (feedback destinations learned, keyframe requests,
        # RTCP hellos not sent) and explain most failures; the libraries stay at info.
        os.environ.setdefault("RELAY_LOG", "info,relay=debug")
        self.answer = self.procs.start(
            "relay answer",
            [self.relay, "answer", "--signal-listen", f"{ip}:{self.signal_port}", "--no-token",
             "--bind", ip, *outs],
            self._log("answer"), stdout=subprocess.PIPE)
        line = read_line(self.answer, "listening", 10)
        log(f"relay answer: {line}")
        self.offer = self.procs.start(
            "relay offer",
            [self.relay, "offer", "--signal", f"http://{ip}:{self.signal_port}",
             "--transport", self.transport, "--mode", self.mode, "--bind", ip, *ins],
            self._log("offer"), stdout=subprocess.PIPE)
        line = read_line(self.offer, "ready", 20)
        log(f"relay offer: {line}")

    def forward_targets(self):
        """(video, audio) for rtp_forward: (port, rtcp_port) each."""
        return self.video_in, self.audio_in

    def stop(self):
        for p in (self.offer, self.answer):
            if p is not None:
                self.procs.stop(p)

    def logs(self):
        return {side: self._log(side) for side in ("offer", "answer")}


def session_counters(logfile):
    """The key=value counters of the relay's last `session ended` log line (what it carried each
    way: on the answering side to_link is RTCP from Janus B going back, on the offering side
    to_local is that feedback delivered to Janus A's forwarder)."""
    line = next((l for l in reversed(tail(logfile, 200).splitlines()) if "session ended" in l), "")
    counters = {}
    for word in line.split():
        k, eq, v = word.partition("=")
        if eq and v.isdigit():
            counters[k] = int(v)
    return counters


# --- Scenarios -----------------------------------------------------------------------------


async def run_scenario(kind, transport, mode, ctx):
    """One scenario on a fresh mountpoint (and relay pair). Returns the result dict."""
    pub, args, procs, ports = ctx["pub"], ctx["args"], ctx["procs"], ctx["ports"]
    result = {"scenario": kind, "transport": transport, "mode": mode}
    mp = Mountpoint(ctx["janus_b"], ports)
    relay = viewer = None
    forwards = []
    started = time.monotonic()
    try:
        await mp.create()
        if transport == "direct":
            # Baseline: Janus A forwards straight into the mountpoint; its forwarder's RTCP
            # socket announces itself on the mountpoint's RTCP port, where Janus B learns
            # where to send keyframe requests.
            targets = (mp.video, mp.audio)
        else:
            relay = RelayPair(procs, args.relay, args.workdir, args.ip, ports, transport, mode, mp)
            relay.start()
            targets = relay.forward_targets()
        viewer = Viewer(ctx["janus_b"], mp.id)
        # t_event: when the viewer asked to watch (a) or the forward was requested (b); keyframe
        # requests count from there. t0: the origin of the criterion (viewer connected / forward
        # answered).
        if kind == "a":
            forwards = await pub.forward(args.ip, *targets)
            await asyncio.sleep(LATE_VIEWER_S)
            t_event = time.monotonic()
            log(f"viewer joins mountpoint {mp.id}")
            t0 = await viewer.join()
            log("viewer connected")
            result["connect_s"] = round(t0 - t_event, 3)
        else:
            t_join = time.monotonic()
            await viewer.join()
            result["connect_s"] = round(time.monotonic() - t_join, 3)
            await asyncio.sleep(LIVE_BEFORE_FORWARD_S)
            t_event = time.monotonic()
            log("adding the forward")
            forwards = await pub.forward(args.ip, *targets)
            t0 = time.monotonic()
        await asyncio.sleep(SETTLE_S + MEASURE_S + GRACE_S)
        measure_from, measure_to = t0 + SETTLE_S, t0 + SETTLE_S + MEASURE_S
        sent = [i for i, t in enumerate(pub.video.sent_at) if measure_from <= t < measure_to]
        sent_set = {i % (1 << BITS) for i in sent}
        got = {n for (_, n, _) in viewer.decoded if n in sent_set}
        first = next((t for (t, n, _) in viewer.decoded if n is not None and t >= t0), None)
        result.update({
            "sent": len(sent_set),
            "decoded": len(got),
            "ratio": round(len(got) / len(sent_set), 4) if sent_set else 0.0,
            "first_frame_s": None if first is None else round(first - t0, 3),
            "decoded_total": len(viewer.decoded),
            "unreadable": sum(1 for (_, n, _) in viewer.decoded if n is None),
            "keyframe_requests_at_publisher": sum(1 for t in KEYFRAME_REQUESTS
                                                  if t_event <= t < measure_to),
        })
        # When things happened, in seconds from t0 (negative: before it), for a reader who
        # wants to know why a scenario lost frames.
        rel = lambda ts: [round(t - t0, 3) for t in ts if t_event - 0.5 <= t < measure_to]
        result["timeline"] = {
            "event": round(t_event - t0, 3),
            "keyframe_requests_at_publisher": rel(KEYFRAME_REQUESTS),
            "viewer_plis": rel(VIEWER_PLIS),
            "viewer_keyframes": rel([t for (t, _, k) in viewer.decoded if k]),
        }
        result["ok"] = result["ratio"] >= PASS_RATIO
    except Exception as e:  # one broken scenario must not hide the others
        result.update({"ok": False, "error": f"{type(e).__name__}: {e}"})
        log(f"scenario {kind} {transport} {mode} failed: {e}")
    finally:
        if viewer:
            await viewer.close()
        if forwards:
            await pub.stop_forward(forwards)
        if relay:
            relay.stop()
            result["relay_logs"] = relay.logs()
            result["relay_counters"] = {side: session_counters(path) for side, path in relay.logs().items()}
        await mp.destroy()
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)
    return result


def transports(relay):
    out = subprocess.run([relay, "transports"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="temp dir for Janus configs and logs")
    ap.add_argument("--ip", default="10.77.0.1", help="the namespace's own address")
    ap.add_argument("--iface", default="sfr0", help="the interface carrying --ip (Janus ICE gathers there only)")
    ap.add_argument("--relay", help="the relay binary; without it only the direct baseline runs")
    ap.add_argument("--only", help="comma-separated: direct and/or TRANSPORT or TRANSPORT:MODE")
    ap.add_argument("--scenarios", default="a,b")
    args = ap.parse_args()

    links = [("direct", "-")]
    if args.relay:
        links += transports(args.relay)
    if args.only:
        want = args.only.split(",")
        links = [(t, m) for (t, m) in links if t in want or f"{t}:{m}" in want]

    procs = Procs()
    ports = Ports(args.ip)
    pub = None
    t_start = time.monotonic()
    try:
        janus_a = await start_janus(procs, args.workdir, "a", ports.tcp(), "20000-20999", "videoroom",
                                    args.ip, args.iface)
        janus_b = await start_janus(procs, args.workdir, "b", ports.tcp(), "21000-21999", "streaming",
                                    args.ip, args.iface)
        pub = Publisher(janus_a)
        await pub.start()
        ctx = {"pub": pub, "args": args, "procs": procs, "ports": ports, "janus_b": janus_b}
        for transport, mode in links:
            for kind in args.scenarios.split(","):
                await run_scenario(kind, transport, mode, ctx)
    finally:
        if pub:
            with contextlib.suppress(Exception):
                await pub.close()
        procs.stop_all()
        log(f"done in {time.monotonic() - t_start:.1f} s")


def _terminated(signum, _frame):
    # SIGTERM from the test's guard (timeout, failure): unwind through every `finally`,
    # which stops Janus and the relays.
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    try:
        asyncio.run(main())
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); everything this run started is stopped")
        sys.exit(130)
