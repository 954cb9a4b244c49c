#!/usr/bin/env bash
# Self-test against a running broker: selftest.sh BOOTSTRAP [WORKERS] [RECORDS]
# Writes RECORDS keyed records (100 keys, 2 partitions) to a fresh input topic,
# then for each job starts the peer (run.sh, recovery on), waits until the
# output is complete and right (check.py verify), and SIGTERMs the peer.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bs="$1"; workers="${2:-2}"; records="${3:-50000}"
py="$here/.venv/bin/python"
tag="bw$(date +%s)"
"$py" "$here/check.py" produce "$bs" "$tag-in" "$tag-identity" --records "$records"
"$py" "$here/check.py" produce "$bs" "$tag-in" "$tag-count" --records 0
rc=0
for job in identity count; do
  start=$(date +%s%N)
  PEER_BOOTSTRAP="$bs" PEER_INPUT="$tag-in" PEER_OUTPUT="$tag-$job" PEER_JOB="$job" \
    "$here/run.sh" "$workers" >"/tmp/$tag-$job.stdout" 2>"/tmp/$tag-$job.stderr" &
  pid=$!
  if "$py" "$here/check.py" verify "$bs" "$tag-in" "$tag-$job" "$job" --timeout 300; then
    echo "$job: OK in $(( ($(date +%s%N) - start) / 1000000 )) ms (start to verified, workers=$workers)"
  else
    echo "$job: FAIL"; rc=1
  fi
  ps -o pid,nlwp,rss,time,cmd -p "$pid" | cat
  kill -TERM "$pid"; wait "$pid" || true
  echo "stdout bytes: $(wc -c <"/tmp/$tag-$job.stdout"); stderr tail:"; tail -3 "/tmp/$tag-$job.stderr"
done
exit $rc
