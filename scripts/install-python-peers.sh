#!/usr/bin/env bash
# Installs the third-party Python peers the interop tests talk to, pinned,
# into a venv at target/peers-venv. Idempotent: does nothing when the
# pinned versions are already there. Tests that need a peer skip (and say
# so) when the venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/peers-venv
# package==version, one per peer (RoQ interop: aioquic; data-channel interop and the
# Janus end-to-end test, tests/janus.rs: aiortc).
packages=(aioquic==1.7.2 aiortc==1.16.0)

if [ ! -x "$venv/bin/python" ]; then
  echo "install-python-peers: creating $venv"
  python3 -m venv "$venv"
fi
missing=()
for p in "${packages[@]}"; do
  name=${p%%==*}
  version=${p##*==}
  have=$("$venv/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}' || true)
  [ "$have" = "$version" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-python-peers: installing ${missing[*]}"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
echo "install-python-peers: $("$venv/bin/python" -m pip freeze --disable-pip-version-check | grep -E "^($(IFS='|'; echo "${packages[*]%%==*}"))==" | tr '\n' ' ')"
