#!/usr/bin/env bash
# Step 1 of the real-media test, without the relay: the sender streams straight to the receiver
# on one loopback UDP port; prints the frame counts of both ends and whether the receiver
# decoded exactly the sender's frames (by checksum, in order).   loopback.sh [PORT]
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
port=${1:-$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
out=$(mktemp -d)
rpid= spid=
cleanup() { kill ${rpid:+"$rpid"} ${spid:+"$spid"} 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
frames() { awk -v n="$2" '$1 ~ /^[0-9]+:[0-9][0-9]:/ && length($2) == n {print $2}' "$1"; }

"$dir/gst.sh" receiver 127.0.0.1 "$port" >"$out/recv" 2>&1 & rpid=$!
for _ in $(seq 200); do grep -q '^Setting pipeline to PLAYING' "$out/recv" && break; sleep 0.05; done
start=$EPOCHREALTIME
"$dir/gst.sh" sender 127.0.0.1 "$port" >"$out/send" 2>&1 & spid=$!
# The sender is done when its local decode has every frame (150 video, 251 audio): now and
# then rtpbin never sends EOS on its RTCP pads and gst-launch would not exit by itself.
for _ in $(seq 400); do
  kill -0 "$spid" 2>/dev/null || break
  [ "$(frames "$out/send" 40 | wc -l)" -ge 150 ] && [ "$(frames "$out/send" 32 | wc -l)" -ge 251 ] && break
  sleep 0.05
done
sleep 0.5; kill "$spid" 2>/dev/null && echo "(sender did not exit by itself: killed)"
echo "sender done in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
sleep 0.5; kill -INT "$rpid"; wait "$rpid" || true
for kind in video:40 audio:32; do
  n=${kind#*:}
  echo "${kind%:*}: sent $(frames "$out/send" "$n" | wc -l) received $(frames "$out/recv" "$n" | wc -l)" \
    "identical=$(cmp -s <(frames "$out/send" "$n") <(frames "$out/recv" "$n") && echo yes || echo no)"
done
