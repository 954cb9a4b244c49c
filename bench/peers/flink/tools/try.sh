#!/usr/bin/env bash
# Manual smoke test of the Flink peer against a running broker (not used by the runner).
# usage: tools/try.sh BOOT IN OUT JOB GUARANTEE PARALLELISM N KEYS   (run from /work/main)
set -u
B=$1 IN=$2 OUT=$3 JOB=$4 G=$5 P=$6 N=$7 KEYS=$8
D=bench/peers/flink
ISO=read_uncommitted; [ "$G" = exactly-once ] && ISO=read_committed
LOG=/tmp/flink-peer-$OUT.err
t0=$(date +%s.%N)
java -Xmx768m -cp "$D/target/flink-peer.jar:$D/target/libs/*" weir.peers.FlinkPeer \
  --bootstrap "$B" --input "$IN" --output "$OUT" --job "$JOB" --guarantee "$G" --parallelism "$P" --group "g-$OUT" \
  > /tmp/flink-peer-$OUT.out 2> "$LOG" &
PID=$!
while ! grep -q READY /tmp/flink-peer-$OUT.out 2>/dev/null; do
  kill -0 $PID 2>/dev/null || { echo "peer died"; tail -30 "$LOG"; exit 1; }
  sleep 0.05
done
t1=$(date +%s.%N)
java -Xmx256m -cp "$D/target/libs/*" $D/tools/PeerCheck.java check "$B" "$OUT" "$JOB" "$N" "$KEYS" "$ISO" 120
t2=$(date +%s.%N)
RSS=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
kill -TERM $PID; wait $PID 2>/dev/null
echo "startup_to_READY_s=$(echo "$t1-$t0"|bc) total_until_all_output_s=$(echo "$t2-$t0"|bc) peak_rss_kb=$RSS stdout=[$(tr '\n' ' ' < /tmp/flink-peer-$OUT.out)] stderr_lines=$(wc -l < $LOG)"
