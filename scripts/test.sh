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

cargo test --workspace --locked "$@"
# The patched SCTP under dc-relay (patches/rtc-sctp, wired with [patch.crates-io])
# is not a workspace member, so its own tests, the loss-recovery regressions
# among them, run here by name.
cargo test -p rtc-sctp --locked "$@"
