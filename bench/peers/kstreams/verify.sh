#!/usr/bin/env bash
# Manual end-to-end check of KStreamsPeer against a running broker.
# Usage (from /work/main, after the mvn build): bench/peers/kstreams/verify.sh HOST:PORT [RECORDS] [KEYS]
# Runs identity and count under at-least-once and exactly-once; exits non-zero on any failure.
set -u
BS=$1; N=${2:-50000}; K=${3:-100}
D=$(cd "$(dirname "$0")" && pwd)
CP="$D/target/kstreams-peer.jar:$D/target/libs/*"
TCP="$D/target/test-classes:$CP"
V() { java -Xmx256m -cp "$TCP" weir.peers.VerifyTool "$@"; }
fail=0
for job in identity count; do
  for g in at-least-once exactly-once; do
    tag="$job-$g-$$"
    V create "$BS" "in-$tag" 2 >/dev/null && V create "$BS" "out-$tag" 2 >/dev/null || { echo "create failed"; exit 1; }
    V produce "$BS" "in-$tag" "$N" "$K" >/dev/null || { echo "produce failed"; exit 1; }
    t0=$(date +%s.%N)
    java -Xmx512m -cp "$CP" weir.peers.KStreamsPeer --bootstrap "$BS" --input "in-$tag" --output "out-$tag" \
      --job "$job" --guarantee "$g" --parallelism 2 --app-id "app-$tag" >"/tmp/peer-$tag.out" 2>"/tmp/peer-$tag.err" &
    pid=$!
    iso=read_uncommitted; [ "$g" = exactly-once ] && iso=read_committed
    V check "$BS" "out-$tag" "$job" "$N" "$K" "$iso" 120; rc=$?
    t1=$(date +%s.%N)
    kill -TERM $pid; wait $pid; prc=$?
    echo "$job/$g: check rc=$rc, stdout=[$(tr '\n' ' ' < /tmp/peer-$tag.out)], peer exit=$prc, stderr lines=$(wc -l < /tmp/peer-$tag.err), wall $(echo "$t1 - $t0" | bc) s (incl. 3 s quiet wait)"
    [ $rc -eq 0 ] || fail=1
  done
done
exit $fail
