// weir.ts: the Weir plugin ABI, version 1, for AssemblyScript.
//
// A small helper module, not a framework: the ABI constants (generated from
// plugin-sdk/src/abi.rs), the host imports, the two standard exports
// (`weir_abi_version`, `weir_input_buffer`), a zero-copy view of input
// records, an output batch builder, logging, and an `abort` that reports
// through `weir.log`. docs/ABI.md is the contract byte by byte.
//
// A plugin's entry file imports from here, re-exports the standard exports
// and defines `weir_process`:
//
//   import { Batch, Output } from "../../plugin-sdk/assemblyscript/weir";
//   export { weir_abi_version, weir_input_buffer } from "../../plugin-sdk/assemblyscript/weir";
//   export function weir_process(ptr: usize, len: i32): i32 { ... }
//
// Build (docs/ABI.md, "Writing a plugin in AssemblyScript"):
//
//   asc index.ts -O3 --runtime incremental --use abort=weirAbort -o plugin.wasm
//
// State is ordinary AssemblyScript data (a Map in a global, objects on the
// managed heap): it lives in linear memory and mutable globals, garbage
// collector included, and a checkpoint snapshots all of it.

// BEGIN GENERATED FROM plugin-sdk/src/abi.rs (`cargo xtask bindings` rewrites this block; do not edit)
/** ABI version 1.0: what a plugin's `weir_abi_version()` export returns when it uses none of the 1.1 exports and imports. */
export const ABI_VERSION: i32 = 1;
/** ABI version 1.1 (65537, `0x0001_0001`: major in the high half, minor in the low half; `1` stays the spelling of 1.0). It adds, and changes nothing of 1.0: the optional export `EXPORT_TICK` and the import `IMPORT_SINK_TOPICS`. A module that exports a 1.1 export must return this from `weir_abi_version()`, so that a 1.0 host refuses it by name instead of never calling it. */
export const ABI_VERSION_1_1: i32 = 65537;
/** Export: `memory`, the plugin's linear memory. */
export const EXPORT_MEMORY: string = "memory";
/** Export: `weir_abi_version() -> i32`, returns `ABI_VERSION` (1.0) or `ABI_VERSION_1_1`. */
export const EXPORT_ABI_VERSION: string = "weir_abi_version";
/** Export: `weir_input_buffer(size: i32) -> i32`, a pointer to at least `size` writable bytes, 8-aligned, owned by the plugin, that stays valid until the next call into the plugin. The host writes input batches and the config there. */
export const EXPORT_INPUT_BUFFER: string = "weir_input_buffer";
/** Export: `weir_process(ptr: i32, len: i32) -> i32`, process the batch at `[ptr, ptr+len)`; returns `STATUS_OK` or a plugin-defined error code. */
export const EXPORT_PROCESS: string = "weir_process";
/** Optional export: `weir_init(ptr: i32, len: i32) -> i32`, receives the plugin's config (a config block) on a fresh start only. */
export const EXPORT_INIT: string = "weir_init";
/** Optional export (ABI 1.1): `weir_tick(watermark: i64, processing_time: i64) -> i32`, called between batches when the partition's event-time watermark advances and at least every `pipeline.tick_interval` while the partition is idle. `watermark` is in ms since the epoch, or `WATERMARK_NONE` before any record with a timestamp, or `WATERMARK_END` once a bounded input has ended; `processing_time` is the host's wall clock in ms since the epoch. It may emit like `weir_process` and returns `STATUS_OK` or a plugin-defined error code. */
export const EXPORT_TICK: string = "weir_tick";
/** Optional export (ABI 1.1): `weir_state_export() -> i32`, the plugin's state in a portable form of its own: returns the address of a `STATE_DESCRIPTOR_LEN`-byte descriptor (`format_version: u32, ptr: u32, len: u32`, little-endian, 4-aligned) of bytes it owns, or 0 if it cannot. Called on an instance restored from a memory image of this module, when a different module is to take its state over. */
export const EXPORT_STATE_EXPORT: string = "weir_state_export";
/** Optional export (ABI 1.1): `weir_state_import(ptr: i32, len: i32, format_version: i32) -> i32`, rebuilds the state from bytes some module's `weir_state_export` wrote in `format_version`; called on a fresh instance after `weir_init`. Returns `STATUS_OK` or a plugin-defined error code. */
export const EXPORT_STATE_IMPORT: string = "weir_state_import";
/** Size of the descriptor `weir_state_export` returns the address of. */
export const STATE_DESCRIPTOR_LEN: usize = 12;
/** `weir_tick` watermark before the partition has seen a record with a timestamp (`i64::MIN`). */
export const WATERMARK_NONE: i64 = -9223372036854775808;
/** `weir_tick` watermark at the end of a bounded input: every window closes (`i64::MAX`). */
export const WATERMARK_END: i64 = 9223372036854775807;
/** Module name of the host imports. */
export const IMPORT_MODULE: string = "weir";
/** Import: `weir.emit(ptr: i32, len: i32) -> i32`, hands the host a batch of output records (same layout as input; `offset` ignored). The host copies it before returning, so the plugin may reuse the buffer at once. */
export const IMPORT_EMIT: string = "emit";
/** Import: `weir.log(level: i32, ptr: i32, len: i32)`, a UTF-8 log line. */
export const IMPORT_LOG: string = "log";
/** Import (ABI 1.1): `weir.sink_topics() -> i32`, the number of configured sink topics: an output record's `topic` must be below it. */
export const IMPORT_SINK_TOPICS: string = "sink_topics";
/** Module name of the WASI preview 1 imports the host also offers. */
export const WASI_MODULE: string = "wasi_snapshot_preview1";
/** `weir_process`/`weir_init` status: success. Any other value is a plugin error and fails the batch. */
export const STATUS_OK: i32 = 0;
/** `weir.emit` result: accepted. */
export const EMIT_OK: i32 = 0;
/** `weir.emit` result: a record names an output topic index that is not configured. Nothing of that batch was emitted. */
export const EMIT_BAD_TOPIC: i32 = -1;
/** `weir.emit` result: the batch is malformed (lengths do not add up). */
export const EMIT_MALFORMED: i32 = -2;
/** `weir.emit` result: reserved for output limits. This host never returns it: a call that emits past `limits.max_output_records`, `limits.max_output_bytes` or `limits.max_record_bytes` traps instead. */
export const EMIT_LIMIT: i32 = -3;
/** Log levels for `weir.log`. */
export const LOG_ERROR: i32 = 1;
export const LOG_WARN: i32 = 2;
export const LOG_INFO: i32 = 3;
export const LOG_DEBUG: i32 = 4;
export const LOG_TRACE: i32 = 5;
/** Size of the batch header (count + reserved). */
export const BATCH_HEADER_LEN: usize = 8;
/** Size of the fixed part of every record. */
export const RECORD_HEADER_LEN: usize = 40;
/** Records start on this alignment (relative to the batch start). */
export const RECORD_ALIGN: usize = 8;
/** A length of -1 encodes a null key, value or header value. */
export const NULL_LEN: i32 = -1;
/** Output `partition` of -1: the host's partitioner chooses (key hash). */
export const ANY_PARTITION: i32 = -1;
/** Timestamp of -1: none (the producer stamps output with the current time). */
export const NO_TIMESTAMP: i64 = -1;
// END GENERATED

// ---------------------------------------------------------------------------
// Host imports

// @ts-ignore: decorator
@external("weir", "emit")
declare function host_emit(ptr: usize, len: i32): i32;

// @ts-ignore: decorator
@external("weir", "log")
declare function host_log(level: i32, ptr: usize, len: i32): void;

// @ts-ignore: decorator
@external("weir", "sink_topics")
declare function host_sink_topics(): i32;

/**
 * weir.sink_topics (ABI 1.1): the number of sink topics; output `topic`
 * indexes must stay below it. A plugin that calls it declares 1.1: it
 * re-exports `weir_abi_version_1_1 as weir_abi_version`.
 */
export function sinkTopics(): i32 {
  return host_sink_topics();
}

/** weir.emit: hands the host an encoded batch; returns an EMIT_* code. */
export function emitRaw(ptr: usize, len: i32): i32 {
  return host_emit(ptr, len);
}

/** weir.log: one line at `level` (LOG_*). */
export function log(level: i32, line: string): void {
  const bytes = String.UTF8.encode(line);
  host_log(level, changetype<usize>(bytes), bytes.byteLength);
}

/** Logs at error level: the reason shown when the call returns non-zero. */
export function logError(line: string): void {
  log(LOG_ERROR, line);
}

/**
 * The `abort` that AssemblyScript calls on a failed assertion, a bad cast,
 * an index out of range or out of memory. Compile with
 * `--use abort=weirAbort` (it is declared @global, so the name does not
 * depend on where this file is) so that the module does not import
 * `env.abort`, which the host does not provide. It logs the message at
 * error level (the reason the host reports) and traps.
 */
// @ts-ignore: decorator
@global export function weirAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  const text = "abort: " + (message ? message : "(no message)") + " at " + (fileName ? fileName : "?") + ":" + line.toString() + ":" + column.toString();
  logError(text);
  unreachable();
}

// ---------------------------------------------------------------------------
// Standard exports (re-export both from the entry file)

/** Export `weir_abi_version`, ABI 1.0. */
export function weir_abi_version(): i32 {
  return ABI_VERSION;
}

/**
 * `weir_abi_version` for ABI 1.1: a plugin that defines
 * `weir_tick(watermark: i64, processingTime: i64): i32` (docs/ABI.md, 3a)
 * or calls `sinkTopics` re-exports this one instead:
 * `export { weir_abi_version_1_1 as weir_abi_version } from ".../weir";`
 */
export function weir_abi_version_1_1(): i32 {
  return ABI_VERSION_1_1;
}

// ---------------------------------------------------------------------------
// Portable state (ABI 1.1, docs/ABI.md 3b): a plugin that defines
//   export function weir_state_export(): usize
//   export function weir_state_import(ptr: usize, len: i32, formatVersion: i32): i32
// (and re-exports weir_abi_version_1_1) lets a later build take its state
// over when its memory layout changed.

const stateDescriptor: usize = heap.alloc(STATE_DESCRIPTOR_LEN);
let stateBytes: ArrayBuffer = new ArrayBuffer(0);

/**
 * What `weir_state_export` returns: keeps `bytes` alive until the next
 * call and describes them as format `formatVersion`.
 */
export function describeState(formatVersion: u32, bytes: ArrayBuffer): usize {
  stateBytes = bytes;
  store<u32>(stateDescriptor, formatVersion);
  store<u32>(stateDescriptor, <u32>changetype<usize>(stateBytes), 4);
  store<u32>(stateDescriptor, <u32>stateBytes.byteLength, 8);
  return stateDescriptor;
}

let inputPtr: usize = 0;
let inputCap: usize = 0;

/**
 * Export `weir_input_buffer`: one buffer from the runtime's heap
 * (`heap.alloc`, 16-aligned, not garbage collected), grown when a larger
 * batch comes and kept across calls.
 */
export function weir_input_buffer(size: i32): usize {
  if (size < 0) unreachable();
  if (<usize>size > inputCap || inputPtr == 0) {
    if (inputPtr != 0) heap.free(inputPtr);
    let cap: usize = inputCap > 0 ? inputCap : 4096;
    while (cap < <usize>size) cap <<= 1;
    inputPtr = heap.alloc(cap);
    inputCap = cap;
  }
  return inputPtr;
}

// ---------------------------------------------------------------------------
// Reading input

/** Length as stored (-1 = null) to a byte count. */
// @ts-ignore: decorator
@inline export function byteLen(len: i32): usize {
  return len < 0 ? 0 : <usize>len;
}

/** Rounds up to RECORD_ALIGN. */
// @ts-ignore: decorator
@inline export function align(n: usize): usize {
  return (n + (RECORD_ALIGN - 1)) & ~(RECORD_ALIGN - 1);
}

/**
 * One record's 40-byte header, read in place: `changetype<Record>(ptr)`.
 * Unmanaged, so walking a batch allocates nothing.
 */
@unmanaged
export class Record {
  offset: i64;
  timestamp: i64;
  partition: i32;
  topic: u32;
  keyLen: i32;
  valueLen: i32;
  headersLen: u32;
  headerCount: u32;

  /** Address of the key bytes (valid when keyLen > 0). */
  get keyPtr(): usize {
    return changetype<usize>(this) + RECORD_HEADER_LEN;
  }
  /** Address of the value bytes (valid when valueLen > 0). */
  get valuePtr(): usize {
    return this.keyPtr + byteLen(this.keyLen);
  }
  /** Address of the header block (headersLen bytes, headerCount entries). */
  get headersPtr(): usize {
    return this.valuePtr + byteLen(this.valueLen);
  }
  /** Bytes the record occupies, padding included. */
  get size(): usize {
    return align(RECORD_HEADER_LEN + byteLen(this.keyLen) + byteLen(this.valueLen) + <usize>this.headersLen);
  }
  /** The key's bytes as a string, one char per byte (lossless), or null. */
  keyString(): string | null {
    return this.keyLen < 0 ? null : latin1(this.keyPtr, this.keyLen);
  }
  /** The value as UTF-8 text, or null. */
  valueText(): string | null {
    return this.valueLen < 0 ? null : String.UTF8.decodeUnsafe(this.valuePtr, <usize>this.valueLen);
  }
}

/** A record batch at [ptr, ptr+len): `count` records, walked in place. */
export class Batch {
  readonly count: u32;
  private pos: usize;
  private left: u32;

  constructor(public readonly ptr: usize, public readonly len: i32) {
    this.count = load<u32>(ptr);
    this.pos = ptr + BATCH_HEADER_LEN;
    this.left = this.count;
  }

  /** The next record, or 0 (null) after the last. */
  next(): Record | null {
    if (this.left == 0) return null;
    const r = changetype<Record>(this.pos);
    this.pos += r.size;
    this.left--;
    return r;
  }
}

/** A string with one char per byte of [ptr, ptr+len): a lossless map key. */
export function latin1(ptr: usize, len: i32): string {
  const s = changetype<string>(__new(<usize>len << 1, idof<string>()));
  const base = changetype<usize>(s);
  for (let i = 0; i < len; i++) {
    store<u16>(base + (<usize>i << 1), load<u8>(ptr + <usize>i));
  }
  return s;
}

/** Writes `s` (chars < 256, as made by latin1) back as bytes at `dst`. */
export function latin1Write(s: string, dst: usize): void {
  const base = changetype<usize>(s);
  const n = s.length;
  for (let i = 0; i < n; i++) {
    store<u8>(dst + <usize>i, <u8>load<u16>(base + (<usize>i << 1)));
  }
}

// ---------------------------------------------------------------------------
// Writing output

/** Flush threshold, as in the Rust SDK: one weir.emit per batch or per 256 KiB. */
export const FLUSH_AT: usize = 256 * 1024;

/**
 * An output batch on the runtime's heap (`heap.alloc`, not collected),
 * sent with weir.emit by `flush()` or when it passes FLUSH_AT. Keep one in
 * a global and reuse it: its buffer is then allocated once.
 */
export class Output {
  private buf: usize = 0;
  private cap: usize = 0;
  private len: usize = BATCH_HEADER_LEN;
  private count: u32 = 0;
  /** The first error weir.emit returned since the last reset, else EMIT_OK. */
  status: i32 = EMIT_OK;

  /** Room for `n` more bytes. */
  private reserve(n: usize): void {
    if (this.buf != 0 && this.len + n <= this.cap) return;
    let cap = this.cap > 0 ? this.cap : 64 * 1024;
    while (cap < this.len + n) cap <<= 1;
    this.buf = this.buf == 0 ? heap.alloc(cap) : heap.realloc(this.buf, cap);
    this.cap = cap;
  }

  /**
   * Appends a record. Pass 0 as a pointer with length -1 for null.
   * `headersPtr`/`headersLen`/`headerCount` is an encoded header block
   * (for example an input record's), or 0/0/0.
   */
  push(
    topic: u32, partition: i32, timestamp: i64,
    keyPtr: usize, keyLen: i32, valuePtr: usize, valueLen: i32,
    headersPtr: usize = 0, headersLen: u32 = 0, headerCount: u32 = 0,
  ): void {
    const size = align(RECORD_HEADER_LEN + byteLen(keyLen) + byteLen(valueLen) + <usize>headersLen);
    this.reserve(size);
    const r = this.buf + this.len;
    store<i64>(r, 0, 0);
    store<i64>(r, timestamp, 8);
    store<i32>(r, partition, 16);
    store<u32>(r, topic, 20);
    store<i32>(r, keyLen, 24);
    store<i32>(r, valueLen, 28);
    store<u32>(r, headersLen, 32);
    store<u32>(r, headerCount, 36);
    let p = r + RECORD_HEADER_LEN;
    memory.copy(p, keyPtr, byteLen(keyLen));
    p += byteLen(keyLen);
    memory.copy(p, valuePtr, byteLen(valueLen));
    p += byteLen(valueLen);
    memory.copy(p, headersPtr, <usize>headersLen);
    p += <usize>headersLen;
    memory.fill(p, 0, r + size - p);
    this.len += size;
    this.count++;
    if (this.len >= FLUSH_AT) this.flush();
  }

  /** The common case: key and value bytes to sink topic 0, partitioned by key. */
  emit(keyPtr: usize, keyLen: i32, valuePtr: usize, valueLen: i32): void {
    this.push(0, ANY_PARTITION, NO_TIMESTAMP, keyPtr, keyLen, valuePtr, valueLen);
  }

  /** As `emit`, the value given as a string (sent as UTF-8). */
  emitText(keyPtr: usize, keyLen: i32, value: string): void {
    const bytes = String.UTF8.encode(value);
    this.emit(keyPtr, keyLen, changetype<usize>(bytes), bytes.byteLength);
  }

  /** Sends what was appended; returns EMIT_OK or the first weir.emit error. */
  flush(): i32 {
    if (this.count > 0) {
      store<u32>(this.buf, this.count, 0);
      store<u32>(this.buf, 0, 4);
      const rc = host_emit(this.buf, <i32>this.len);
      if (rc != EMIT_OK && this.status == EMIT_OK) this.status = rc;
    }
    this.len = BATCH_HEADER_LEN;
    this.count = 0;
    return this.status;
  }

  /** Forgets a previous error (call at the start of a batch). */
  reset(): void {
    this.len = BATCH_HEADER_LEN;
    this.count = 0;
    this.status = EMIT_OK;
  }
}
