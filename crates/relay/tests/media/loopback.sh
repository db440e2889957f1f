#!/usr/bin/env bash
# Step 1 of the real-media test, without the relay: the sender streams straight to the receiver
# on one loopback UDP port; prints the decoded frame counts of both ends and whether the
# receiver decoded exactly the sender's frames (by checksum).   loopback.sh [PORT]
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
port=${1:-$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
out=$(mktemp -d)
trap 'kill $rpid 2>/dev/null || true; rm -rf "$out"' EXIT
"$dir/gst.sh" receiver 127.0.0.1 "$port" >"$out/recv" 2>&1 & rpid=$!
for _ in $(seq 100); do grep -q '^Setting pipeline to PLAYING' "$out/recv" && break; sleep 0.05; done
start=$EPOCHREALTIME
"$dir/gst.sh" sender 127.0.0.1 "$port" >"$out/send" 2>&1
echo "sender done in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
sleep 0.5; kill -INT $rpid; wait $rpid || true
frames() { awk -v n="$2" '$1 ~ /^[0-9]+:[0-9][0-9]:/ && length($2) == n {print $2}' "$1"; }
for kind in video:40 audio:32 rtcp:64; do
  n=${kind#*:}
  echo "${kind%:*}: sent $(frames "$out/send" "$n" | wc -l) received $(frames "$out/recv" "$n" | wc -l)" \
    "identical=$(cmp -s <(frames "$out/send" "$n" | sort) <(frames "$out/recv" "$n" | sort) && echo yes || echo no)"
done
