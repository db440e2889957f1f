#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: real RTP
# senders and receivers (ffmpeg, GStreamer) from Debian. Idempotent: does
# nothing when everything is already there.
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v gst-launch-1.0 >/dev/null 2>&1 || need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-deps: ffmpeg $(ffmpeg -version | head -1 | awk '{print $3}'), gstreamer $(gst-launch-1.0 --version | head -1 | awk '{print $NF}')"
