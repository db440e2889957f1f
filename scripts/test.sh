#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (ffmpeg and GStreamer from Debian; Python WebRTC/QUIC peers in a venv
# under target/), then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ -f scripts/install-python-peers.sh ]; then
  bash scripts/install-python-peers.sh
fi

cargo test --workspace --locked --no-fail-fast "$@"
# The patched SCTP and DTLS under dc-relay (patches/rtc-sctp, patches/rtc-dtls,
# wired with [patch.crates-io]) are not workspace members, so their own tests,
# the regressions for each patch among them, run here by name.
cargo test -p rtc-sctp --locked "$@"
cargo test -p rtc-dtls --locked "$@"

# Each backend's example relays between two ends in one process; they are
# documentation that has to keep working, so they run (and must exit 0).
for example in rtp-udp-relay:pair quic-relay:pair dc-relay:pair; do
  cargo run --locked -q -p "${example%%:*}" --example "${example##*:}" >/dev/null
done
