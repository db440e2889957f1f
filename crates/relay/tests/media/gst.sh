#!/usr/bin/env bash
# Renders one of the pipeline templates beside this script and runs it with gst-launch-1.0, for
# running the real-media peers by hand (the Rust test renders the same templates itself).
#   gst.sh receiver HOST PORT    # listen on HOST:PORT, print one checksum line per decoded frame
#   gst.sh sender HOST PORT      # stream 150 H.264 + 251 Opus frames to HOST:PORT, then exit
# Stop the receiver with Ctrl-C (SIGINT): -e turns it into EOS so the decoders drain.
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
role=${1:?sender|receiver} host=${2:?host} port=${3:?port}
strip() { grep -v '^[[:space:]]*#' "$1" | tr '\n' ' '; }
desc=$(strip "$dir/$role.pipeline")
desc=${desc//@VIDEO_DECODE@/$(strip "$dir/video-decode.chain")}
desc=${desc//@AUDIO_DECODE@/$(strip "$dir/audio-decode.chain")}
desc=${desc//@DEST_HOST@/$host}; desc=${desc//@DEST_PORT@/$port}
desc=${desc//@LISTEN_HOST@/$host}; desc=${desc//@LISTEN_PORT@/$port}
# gst-launch-1.0 escapes each argument as one token, so the description goes in word by word.
# shellcheck disable=SC2086
exec gst-launch-1.0 -e $desc
