#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: real RTP
# senders and receivers (ffmpeg, GStreamer) and a real SFU (Janus) from Debian.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

# Every package is checked on its own, so a machine that has some of them gets the rest.
# gstreamer1.0-plugins-base: videotestsrc, audiotestsrc, opusenc/opusdec
# gstreamer1.0-plugins-good: rtpbin, rtpptdemux, rtpjitterbuffer, H.264/Opus (de)payloaders, udp, capssetter
# gstreamer1.0-plugins-bad:  h264parse, checksumsink
# gstreamer1.0-plugins-ugly: x264enc
# gstreamer1.0-libav:        avdec_h264
# janus:                     Janus 1.1.2, the two SFUs of crates/relay/tests/janus.rs
# iproute2:                  `ip netns`/veth, the namespace that test runs Janus in
# golang-go, golang-github-pion-webrtc.v3-dev: Go 1.19 and pion 3.1.56, from which
#   relay-bench builds tools/pion-relay offline (the `pion dc` rows of the report)
# iperf3:                    the report's `iperf3` ceiling row (one send per packet, loopback)
# nftables, conntrack:       the NAT router of crates/relay/tests/nat_netns.rs (masquerade, and
#                            flushing its mappings to force a rebinding)
packages=(ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav janus iproute2
  golang-go golang-github-pion-webrtc.v3-dev iperf3 nftables conntrack)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-deps: ffmpeg $(ffmpeg -version | head -1 | awk '{print $3}'), gstreamer $(gst-launch-1.0 --version | head -1 | awk '{print $NF}'), janus $(janus --version 2>/dev/null | awk '/^Janus version/ {print $NF}' | tr -d '()'), $(go version | awk '{print $3}'), pion $(dpkg-query -W -f='${Version}' golang-github-pion-webrtc.v3-dev), $(iperf3 --version | head -1 | awk '{print $1, $2}')"
