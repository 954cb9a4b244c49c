"""Test helper for the Bytewax peer (uses confluent-kafka from .venv).

  check.py produce BOOTSTRAP INPUT OUTPUT [--records 50000] [--keys 100] [--partitions 2]
      create INPUT and OUTPUT (if absent) and write keyed records k0..k{keys-1}
      with ~100 B random values to INPUT.
  check.py verify BOOTSTRAP INPUT OUTPUT identity|count [--timeout 120]
      read all of INPUT, then read OUTPUT until the expected number of records
      is there (or timeout), and check it:
        identity: same multiset of (key, value) as the input
        count:    per key exactly "1".."n" in order, each key on one partition
      exits 0 if right; prints the figures on stderr.
"""

import argparse
import collections
import os
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def create_topics(bootstrap, topics, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1)
           for t in topics if t not in existing]
    for t, fut in admin.create_topics(new).items() if new else []:
        fut.result()
        log(f"created topic {t} ({partitions} partitions)")


def produce(args):
    create_topics(args.bootstrap, [args.input, args.output], args.partitions)
    p = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20,
                  "enable.idempotence": "true"})
    for i in range(args.records):
        key = f"k{i % args.keys}".encode()
        value = i.to_bytes(8, "big") + os.urandom(92)
        while True:
            try:
                p.produce(args.input, key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(30)
    if left:
        sys.exit(f"{left} records not delivered")
    log(f"produced {args.records} records over {args.keys} keys to {args.input}")


def read_all(bootstrap, topic, want=None, timeout=60.0):
    """Read a topic from the beginning. want=None: until EOF of every partition;
    else until `want` records are read (or timeout). Returns list of
    (partition, offset, key, value) in per-partition offset order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-bench-check",
                  "enable.auto.commit": "false", "enable.partition.eof": "true"})
    md = c.list_topics(topic, timeout=10).topics[topic]
    parts = sorted(md.partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, eof = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if want is None and len(eof) == len(parts):
            break
        if want is not None and len(out) >= want:
            # linger a little to catch extra (duplicate) records
            for m in c.consume(10000, 1.0):
                if not m.error():
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
            break
        for m in c.consume(10000, 0.5):
            if m.error():
                if m.error().code() == m.error()._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise RuntimeError(m.error())
            eof.discard(m.partition())
            out.append((m.partition(), m.offset(), m.key(), m.value()))
    c.close()
    return out


def verify(args):
    t0 = time.monotonic()
    inp = read_all(args.bootstrap, args.input)
    n = len(inp)
    out = read_all(args.bootstrap, args.output, want=n, timeout=args.timeout)
    waited = time.monotonic() - t0
    log(f"input {n} records; output {len(out)} records (waited {waited:.1f} s)")
    ok = True
    if args.job == "identity":
        a = collections.Counter((k, v) for _, _, k, v in inp)
        b = collections.Counter((k, v) for _, _, k, v in out)
        if a != b:
            ok = False
            log(f"identity MISMATCH: missing {sum((a - b).values())}, "
                f"extra {sum((b - a).values())}")
    else:
        expect = collections.Counter(k for _, _, k, _ in inp)
        seqs = collections.defaultdict(list)
        parts = collections.defaultdict(set)
        for p, _, k, v in sorted(out, key=lambda r: (r[0], r[1])):
            seqs[k].append(v)
            parts[k].add(p)
        bad = 0
        for k in set(expect) | set(seqs):
            want = [str(i).encode() for i in range(1, expect[k] + 1)]
            if seqs[k] != want:
                bad += 1
                if bad <= 5:
                    log(f"count MISMATCH key {k!r}: want 1..{expect[k]}, got "
                        f"{len(seqs[k])} values starting {seqs[k][:5]}")
        split = [k for k, ps in parts.items() if len(ps) > 1]
        if split:
            log(f"{len(split)} keys on more than one output partition")
        ok = bad == 0 and not split
        log(f"count: {len(expect)} keys, {bad} wrong")
    log("OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("bootstrap"); p.add_argument("input"); p.add_argument("output")
    p.add_argument("--records", type=int, default=50000)
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--partitions", type=int, default=2)
    v = sub.add_parser("verify")
    v.add_argument("bootstrap"); v.add_argument("input"); v.add_argument("output")
    v.add_argument("job", choices=["identity", "count"])
    v.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    produce(args) if args.cmd == "produce" else verify(args)


if __name__ == "__main__":
    main()
