"""Bytewax peer for the Weir benchmark: the same two jobs as Weir.

Run (one process, N worker threads):
    .venv/bin/python -m bytewax.run peer.py:flow -w N [-r DIR -s 1 -b 0]
or, with recovery set up in a fresh temp dir, `./run.sh N`.

Environment:
    PEER_BOOTSTRAP  host:port of the Kafka broker(s), comma separated
    PEER_INPUT      input topic (read from the earliest offset, unbounded)
    PEER_OUTPUT     output topic
    PEER_JOB        identity | count

identity: every input record is written unchanged (same key, same value).
count:    for every input record emit (key, running count of that key as a
          decimal UTF-8 string); the output key is the input key.

Nothing is printed on stdout. The process runs until it is killed.
"""

import os
import sys

import bytewax.operators as op
from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSink,
    KafkaSinkMessage,
    KafkaSource,
)
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.stderr.write(f"peer.py: environment variable {name} is required\n")
        sys.exit(2)
    return value


BOOTSTRAP = _env("PEER_BOOTSTRAP").split(",")
INPUT = _env("PEER_INPUT")
OUTPUT = _env("PEER_OUTPUT")
JOB = _env("PEER_JOB")
if JOB not in ("identity", "count"):
    sys.stderr.write(f"peer.py: PEER_JOB must be identity or count, not {JOB!r}\n")
    sys.exit(2)


def _only_ok(msg):
    # raise_on_errors=True makes the source raise on consumer errors, so no
    # KafkaError should ever reach here; drop defensively all the same.
    return not isinstance(msg, KafkaError)


def _identity(msg):
    return KafkaSinkMessage(key=msg.key, value=msg.value)


def _key(msg) -> str:
    return msg.key.decode("utf-8")


def _count(state, _msg):
    n = 1 if state is None else state + 1
    return (n, n)


def _to_sink(key_and_n):
    key, n = key_and_n
    return KafkaSinkMessage(key=key.encode("utf-8"), value=str(n).encode("ascii"))


def _build() -> Dataflow:
    df = Dataflow(f"weir_bench_{JOB}")
    source = KafkaSource(
        BOOTSTRAP,
        [INPUT],
        tail=True,  # unbounded: keep waiting at the end of the topic
        starting_offset=OFFSET_BEGINNING,
        raise_on_errors=True,
    )
    msgs = op.filter("ok", op.input("in", df, source), _only_ok)
    if JOB == "identity":
        out = op.map("identity", msgs, _identity)
    else:
        keyed = op.key_on("key", msgs, _key)
        counts = op.stateful_map("count", keyed, _count)
        out = op.map("to_sink", counts, _to_sink)
    # Idempotent producer: no duplicates or reordering from internal retries,
    # so the per-key order of the output follows the dataflow's order.
    sink = KafkaSink(BOOTSTRAP, OUTPUT, add_config={"enable.idempotence": "true"})
    op.output("out", out, sink)
    return df


flow = _build()
