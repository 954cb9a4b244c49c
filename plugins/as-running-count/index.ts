// as_running_count: stateful, the twin of plugins/running-count in
// AssemblyScript. For every record it emits the record's key and the number
// of records seen with that key so far, as decimal text, to the first sink
// topic, partitioned by key. A null key counts as the empty key (and stays
// null in the output).
//
// The counts are an ordinary `Map<string, u64>` on AssemblyScript's managed
// heap, allocated and traced by its own runtime (the incremental collector,
// `--runtime incremental`). To make sure the collector's state is really
// part of what a checkpoint captures, every record also allocates and drops
// short-lived objects, and a ring of long-lived ones is replaced a slot at
// a time: the collector frees the dropped ones, interleaved with the work,
// and runs a full collection every 8th batch. At the end of every batch the
// ring is checked against a running checksum; a collector that freed or
// moved a live object (say, after a restore that missed some of its state)
// fails the batch with status 4. Built by host/build.rs (see docs/ABI.md,
// "Writing a plugin in AssemblyScript").
import { Batch, Output, EMIT_OK, STATUS_OK, latin1, logError } from "../../plugin-sdk/assemblyscript/weir";
export { weir_abi_version, weir_input_buffer } from "../../plugin-sdk/assemblyscript/weir";

/** The state: key (one char per byte) -> records seen. */
const counts = new Map<string, u64>();

const out = new Output();

/** A long-lived object whose fields the ring check verifies. */
class Cell {
  constructor(public text: string, public values: Array<u64>) {}
}

const RING: i32 = 64;
const ring = new Array<Cell>(RING);
let ringSum: u64 = 0;
let seq: u64 = 0;
let batches: u32 = 0;

function cell(n: u64): Cell {
  const values = new Array<u64>(4);
  values[0] = n;
  values[1] = n ^ 0x5555;
  values[2] = n * 3;
  values[3] = ~n;
  return new Cell(n.toString(), values);
}

for (let i = 0; i < RING; i++) {
  ring[i] = cell(<u64>i);
  ringSum += <u64>i;
}

/** Replaces one ring slot (the old Cell becomes garbage) and makes some short-lived garbage. */
function churn(key: string, count: u64): void {
  seq++;
  const slot = <i32>(seq % <u64>RING);
  ringSum -= ring[slot].values[0];
  ring[slot] = cell(seq);
  ringSum += seq;
  // Dropped right away: strings, an array and a map.
  let tmp = new Array<string>();
  for (let i = 0; i < 4; i++) tmp.push(key + "#" + (count + <u64>i).toString());
  const scratch = new Map<string, i32>();
  for (let i = 0; i < tmp.length; i++) scratch.set(tmp[i], i);
  if (scratch.size != 4) unreachable();
}

/** Checks every ring cell against its own fields and the checksum. */
function ringIntact(): bool {
  let sum: u64 = 0;
  for (let i = 0; i < RING; i++) {
    const c = ring[i];
    const n = c.values[0];
    if (c.values.length != 4 || c.values[1] != (n ^ 0x5555) || c.values[2] != n * 3 || c.values[3] != ~n) return false;
    if (c.text != n.toString()) return false;
    sum += n;
  }
  return sum == ringSum;
}

export function weir_process(ptr: usize, len: i32): i32 {
  out.reset();
  const batch = new Batch(ptr, len);
  let r = batch.next();
  while (r) {
    const key = r.keyLen < 0 ? "" : latin1(r.keyPtr, r.keyLen);
    const count: u64 = counts.has(key) ? counts.get(key) + 1 : 1;
    counts.set(key, count);
    out.emitText(r.keyPtr, r.keyLen, count.toString());
    churn(key, count);
    r = batch.next();
  }
  batches++;
  if (batches % 8 == 0) __collect();
  if (!ringIntact()) {
    logError("as_running_count: the ring of live objects is corrupt (garbage collector state lost?)");
    return 4;
  }
  if (out.flush() != EMIT_OK) {
    logError("as_running_count: weir.emit refused the output");
    return 3;
  }
  return STATUS_OK;
}
