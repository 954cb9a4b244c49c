#!/usr/bin/env bash
# Run the Bytewax peer with recovery on (1 s snapshot interval) in a fresh
# temp recovery dir, as ONE process with N worker threads:
#   PEER_BOOTSTRAP=127.0.0.1:9092 PEER_INPUT=in PEER_OUTPUT=out PEER_JOB=count \
#     bench/peers/bytewax/run.sh N
# The script execs python, so the pid you started is the Bytewax process itself
# (SIGTERM it to stop). Recovery dirs are $TMPDIR/bytewax-peer.<pid>; ones left by
# dead processes are removed at the next start.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workers="${1:-1}"
py="$here/.venv/bin/python"
tmp="${TMPDIR:-/tmp}"

for d in "$tmp"/bytewax-peer.*; do
  [[ -d "$d" ]] || continue
  pid="${d##*.}"
  kill -0 "$pid" 2>/dev/null || rm -rf -- "$d"
done

rec="$tmp/bytewax-peer.$$"
rm -rf -- "$rec"
mkdir -p -- "$rec"
"$py" -m bytewax.recovery "$rec" 1 >/dev/null
cd "$here"
exec "$py" -m bytewax.run peer.py:flow -w "$workers" -r "$rec" -s 1 -b 0
