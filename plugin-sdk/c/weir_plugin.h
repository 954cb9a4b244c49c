/*
 * weir_plugin.h: the Weir plugin ABI, version 1, for C (and C++) authors.
 *
 * One header, no library. It declares the host imports (weir.emit,
 * weir.log), the record batch layout as structs, helpers to walk an input
 * batch and to build an output batch, and macros that define the standard
 * exports. docs/ABI.md is the contract byte by byte; the constants block
 * below is generated from plugin-sdk/src/abi.rs (the file the host and the
 * Rust SDK compile), so the three cannot drift.
 *
 * Build a plugin with Debian's clang, lld and wasi-libc (see docs/ABI.md,
 * "Writing a plugin in C"):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 \
 *         -I plugin-sdk/c -o my_plugin.wasm my_plugin.c
 *
 * or, without libc (static buffers only, no malloc/printf; -mbulk-memory
 * turns the header's memcpy/memset into memory.copy/memory.fill):
 *
 *   clang --target=wasm32 -mbulk-memory -nostdlib -O2 -Wl,--no-entry \
 *         -I plugin-sdk/c -o my_plugin.wasm my_plugin.c
 *
 * Everything a plugin keeps between batches (globals, malloc'd memory)
 * lives in linear memory and is checkpointed with it; there is nothing to
 * save or load by hand.
 */
#ifndef WEIR_PLUGIN_H
#define WEIR_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#if !defined(__wasm32__)
#error "weir_plugin.h: build for wasm32 (clang --target=wasm32-wasi or --target=wasm32)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* BEGIN GENERATED FROM plugin-sdk/src/abi.rs (`cargo xtask bindings` rewrites this block; do not edit) */
/* ABI version 1.0: what a plugin's `weir_abi_version()` export returns when it uses none of the 1.1 exports and imports. */
#define WEIR_ABI_VERSION 1
/* ABI version 1.1 (65537, `0x0001_0001`: major in the high half, minor in the low half; `1` stays the spelling of 1.0). It adds, and changes nothing of 1.0: the optional export `EXPORT_TICK` and the import `IMPORT_SINK_TOPICS`. A module that exports a 1.1 export must return this from `weir_abi_version()`, so that a 1.0 host refuses it by name instead of never calling it. */
#define WEIR_ABI_VERSION_1_1 65537
/* Export: `memory`, the plugin's linear memory. */
#define WEIR_EXPORT_MEMORY "memory"
/* Export: `weir_abi_version() -> i32`, returns `ABI_VERSION` (1.0) or `ABI_VERSION_1_1`. */
#define WEIR_EXPORT_ABI_VERSION "weir_abi_version"
/* Export: `weir_input_buffer(size: i32) -> i32`, a pointer to at least `size` writable bytes, 8-aligned, owned by the plugin, that stays valid until the next call into the plugin. The host writes input batches and the config there. */
#define WEIR_EXPORT_INPUT_BUFFER "weir_input_buffer"
/* Export: `weir_process(ptr: i32, len: i32) -> i32`, process the batch at `[ptr, ptr+len)`; returns `STATUS_OK` or a plugin-defined error code. */
#define WEIR_EXPORT_PROCESS "weir_process"
/* Optional export: `weir_init(ptr: i32, len: i32) -> i32`, receives the plugin's config (a config block) on a fresh start only. */
#define WEIR_EXPORT_INIT "weir_init"
/* Optional export (ABI 1.1): `weir_tick(watermark: i64, processing_time: i64) -> i32`, called between batches when the partition's event-time watermark advances and at least every `pipeline.tick_interval` while the partition is idle. `watermark` is in ms since the epoch, or `WATERMARK_NONE` before any record with a timestamp, or `WATERMARK_END` once a bounded input has ended; `processing_time` is the host's wall clock in ms since the epoch. It may emit like `weir_process` and returns `STATUS_OK` or a plugin-defined error code. */
#define WEIR_EXPORT_TICK "weir_tick"
/* Optional export (ABI 1.1): `weir_state_export() -> i32`, the plugin's state in a portable form of its own: returns the address of a `STATE_DESCRIPTOR_LEN`-byte descriptor (`format_version: u32, ptr: u32, len: u32`, little-endian, 4-aligned) of bytes it owns, or 0 if it cannot. Called on an instance restored from a memory image of this module, when a different module is to take its state over. */
#define WEIR_EXPORT_STATE_EXPORT "weir_state_export"
/* Optional export (ABI 1.1): `weir_state_import(ptr: i32, len: i32, format_version: i32) -> i32`, rebuilds the state from bytes some module's `weir_state_export` wrote in `format_version`; called on a fresh instance after `weir_init`. Returns `STATUS_OK` or a plugin-defined error code. */
#define WEIR_EXPORT_STATE_IMPORT "weir_state_import"
/* Size of the descriptor `weir_state_export` returns the address of. */
#define WEIR_STATE_DESCRIPTOR_LEN 12u
/* `weir_tick` watermark before the partition has seen a record with a timestamp (`i64::MIN`). */
#define WEIR_WATERMARK_NONE (-INT64_C(9223372036854775807) - 1)
/* `weir_tick` watermark at the end of a bounded input: every window closes (`i64::MAX`). */
#define WEIR_WATERMARK_END INT64_C(9223372036854775807)
/* Module name of the host imports. */
#define WEIR_IMPORT_MODULE "weir"
/* Import: `weir.emit(ptr: i32, len: i32) -> i32`, hands the host a batch of output records (same layout as input; `offset` ignored). The host copies it before returning, so the plugin may reuse the buffer at once. */
#define WEIR_IMPORT_EMIT "emit"
/* Import: `weir.log(level: i32, ptr: i32, len: i32)`, a UTF-8 log line. */
#define WEIR_IMPORT_LOG "log"
/* Import (ABI 1.1): `weir.sink_topics() -> i32`, the number of configured sink topics: an output record's `topic` must be below it. */
#define WEIR_IMPORT_SINK_TOPICS "sink_topics"
/* Module name of the WASI preview 1 imports the host also offers. */
#define WEIR_WASI_MODULE "wasi_snapshot_preview1"
/* `weir_process`/`weir_init` status: success. Any other value is a plugin error and fails the batch. */
#define WEIR_STATUS_OK 0
/* `weir.emit` result: accepted. */
#define WEIR_EMIT_OK 0
/* `weir.emit` result: a record names an output topic index that is not configured. Nothing of that batch was emitted. */
#define WEIR_EMIT_BAD_TOPIC (-1)
/* `weir.emit` result: the batch is malformed (lengths do not add up). */
#define WEIR_EMIT_MALFORMED (-2)
/* `weir.emit` result: reserved for output limits. This host never returns it: a call that emits past `limits.max_output_records`, `limits.max_output_bytes` or `limits.max_record_bytes` traps instead. */
#define WEIR_EMIT_LIMIT (-3)
/* Log levels for `weir.log`. */
#define WEIR_LOG_ERROR 1
#define WEIR_LOG_WARN 2
#define WEIR_LOG_INFO 3
#define WEIR_LOG_DEBUG 4
#define WEIR_LOG_TRACE 5
/* Size of the batch header (count + reserved). */
#define WEIR_BATCH_HEADER_LEN 8u
/* Size of the fixed part of every record. */
#define WEIR_RECORD_HEADER_LEN 40u
/* Records start on this alignment (relative to the batch start). */
#define WEIR_RECORD_ALIGN 8u
/* A length of -1 encodes a null key, value or header value. */
#define WEIR_NULL_LEN (-1)
/* Output `partition` of -1: the host's partitioner chooses (key hash). */
#define WEIR_ANY_PARTITION (-1)
/* Timestamp of -1: none (the producer stamps output with the current time). */
#define WEIR_NO_TIMESTAMP INT64_C(-1)
/* END GENERATED */

/* ------------------------------------------------------------------ */
/* Imports and exports                                                  */
/* ------------------------------------------------------------------ */

/* Marks a function as a module export under `name`. */
#define WEIR_EXPORT(name) __attribute__((export_name(name), visibility("default")))
/* Declares a host function of module `weir`. */
#define WEIR_IMPORT(name) __attribute__((import_module(WEIR_IMPORT_MODULE), import_name(name)))

/* weir.emit: hands the host a batch of output records (same layout as
 * input). Returns WEIR_EMIT_OK, WEIR_EMIT_BAD_TOPIC or WEIR_EMIT_MALFORMED;
 * on error nothing of the batch was emitted. The host copies the bytes
 * before returning: the buffer may be reused at once. */
WEIR_IMPORT(WEIR_IMPORT_EMIT) int32_t weir_emit(const void *ptr, int32_t len);
/* weir.log: one UTF-8 line at `level` (WEIR_LOG_*). The last error-level
 * line of a failing call is the reason the host reports. */
WEIR_IMPORT(WEIR_IMPORT_LOG) void weir_log(int32_t level, const void *ptr, int32_t len);
/* weir.sink_topics (ABI 1.1): the number of sink topics; output `topic`
 * indexes must stay below it. A plugin that calls it must declare 1.1
 * (WEIR_DEFINE_ABI_VERSION_1_1). */
WEIR_IMPORT(WEIR_IMPORT_SINK_TOPICS) int32_t weir_sink_topics(void);

/* weir_tick (ABI 1.1) is the plugin's to define, with
 * WEIR_DEFINE_ABI_VERSION_1_1():
 *
 *   WEIR_EXPORT(WEIR_EXPORT_TICK)
 *   int32_t weir_tick(int64_t watermark, int64_t processing_time) { ... }
 *
 * `watermark` is WEIR_WATERMARK_NONE before any timestamp and
 * WEIR_WATERMARK_END at the end of a bounded input (docs/ABI.md, 3a). */

/* Portable state (ABI 1.1, docs/ABI.md 3b), so that a later build of the
 * plugin can take the state over when its memory layout changed. Both are
 * the plugin's to define, with WEIR_DEFINE_ABI_VERSION_1_1():
 *
 *   static weir_state_descriptor exported;
 *   WEIR_EXPORT(WEIR_EXPORT_STATE_EXPORT)
 *   int32_t weir_state_export(void) {
 *       ... serialise the state into a buffer that outlives the call ...
 *       return weir_describe_state(&exported, MY_FORMAT, buf, len);
 *   }
 *   WEIR_EXPORT(WEIR_EXPORT_STATE_IMPORT)
 *   int32_t weir_state_import(const uint8_t *ptr, int32_t len, int32_t format_version) {
 *       ... rebuild from format_version, or log why not and return 1 ...
 *   }
 *
 * weir_state_export returns 0 when it cannot (log the reason first). */
typedef struct weir_state_descriptor {
    uint32_t format_version;
    uint32_t ptr;
    uint32_t len;
} weir_state_descriptor;

/* Fills `d` and returns its address, as weir_state_export returns it. */
static inline int32_t weir_describe_state(weir_state_descriptor *d, uint32_t format_version,
                                          const void *ptr, uint32_t len) {
    d->format_version = format_version;
    d->ptr = (uint32_t)(uintptr_t)ptr;
    d->len = len;
    return (int32_t)(uintptr_t)d;
}

/* ------------------------------------------------------------------ */
/* The record batch (docs/ABI.md section 4), little-endian like wasm32  */
/* ------------------------------------------------------------------ */

/* Batch header: 8 bytes, then `count` records. */
typedef struct weir_batch {
    uint32_t count;
    uint32_t reserved; /* write 0 */
} weir_batch;

/* Record header: 40 bytes, 8-aligned, then key, value, headers, padding. */
typedef struct weir_record {
    int64_t offset;        /* input: the offset in its partition; output: ignored (write 0) */
    int64_t timestamp;     /* ms since the epoch, or WEIR_NO_TIMESTAMP */
    int32_t partition;     /* input: source partition; output: target, or WEIR_ANY_PARTITION */
    uint32_t topic;        /* input: source.topics index; output: sink.topics index */
    int32_t key_len;       /* WEIR_NULL_LEN for a null key */
    int32_t value_len;     /* WEIR_NULL_LEN for a null value */
    uint32_t headers_len;  /* bytes of the header block */
    uint32_t header_count; /* entries in the header block */
} weir_record;

/* Header entry (also a config entry): 8 bytes, then name, then value. */
typedef struct weir_header {
    uint32_t name_len;
    int32_t value_len; /* WEIR_NULL_LEN for a null value */
} weir_header;

_Static_assert(sizeof(weir_batch) == WEIR_BATCH_HEADER_LEN, "weir_batch layout");
_Static_assert(sizeof(weir_record) == WEIR_RECORD_HEADER_LEN, "weir_record layout");
_Static_assert(_Alignof(weir_record) == WEIR_RECORD_ALIGN, "weir_record alignment");
_Static_assert(offsetof(weir_record, timestamp) == 8, "weir_record.timestamp");
_Static_assert(offsetof(weir_record, partition) == 16, "weir_record.partition");
_Static_assert(offsetof(weir_record, topic) == 20, "weir_record.topic");
_Static_assert(offsetof(weir_record, key_len) == 24, "weir_record.key_len");
_Static_assert(offsetof(weir_record, value_len) == 28, "weir_record.value_len");
_Static_assert(offsetof(weir_record, headers_len) == 32, "weir_record.headers_len");
_Static_assert(offsetof(weir_record, header_count) == 36, "weir_record.header_count");
_Static_assert(sizeof(weir_header) == 8, "weir_header layout");

/* Rounds up to WEIR_RECORD_ALIGN. */
static inline uint32_t weir_align(uint32_t n) {
    return (n + (WEIR_RECORD_ALIGN - 1)) & ~(uint32_t)(WEIR_RECORD_ALIGN - 1);
}

/* A length as stored (-1 = null) to a byte count. */
static inline uint32_t weir_len(int32_t len) { return len < 0 ? 0u : (uint32_t)len; }

/* Bytes one record occupies, padding included. */
static inline uint32_t weir_record_size(int32_t key_len, int32_t value_len, uint32_t headers_len) {
    return weir_align(WEIR_RECORD_HEADER_LEN + weir_len(key_len) + weir_len(value_len) + headers_len);
}

/* The first record of a batch (only if count >= 1). */
static inline weir_record *weir_first_record(void *batch) {
    return (weir_record *)((uint8_t *)batch + WEIR_BATCH_HEADER_LEN);
}

/* The record after `r` in the same batch. */
static inline weir_record *weir_next_record(weir_record *r) {
    return (weir_record *)((uint8_t *)r + weir_record_size(r->key_len, r->value_len, r->headers_len));
}

/* The key bytes, or NULL for a null key (key_len == WEIR_NULL_LEN). */
static inline uint8_t *weir_record_key(weir_record *r) {
    return r->key_len < 0 ? NULL : (uint8_t *)r + WEIR_RECORD_HEADER_LEN;
}

/* The value bytes, or NULL for a null value. */
static inline uint8_t *weir_record_value(weir_record *r) {
    return r->value_len < 0 ? NULL : (uint8_t *)r + WEIR_RECORD_HEADER_LEN + weir_len(r->key_len);
}

/* The header block (`headers_len` bytes, `header_count` entries). */
static inline uint8_t *weir_record_headers(weir_record *r) {
    return (uint8_t *)r + WEIR_RECORD_HEADER_LEN + weir_len(r->key_len) + weir_len(r->value_len);
}

/* Iterates a header block (or, after its 4-byte count, a config block):
 *   const uint8_t *p = weir_record_headers(r);
 *   for (uint32_t i = 0; i < r->header_count; i++) {
 *       const weir_header *h = (const weir_header *)p;   (unaligned: use memcpy
 *       ...                                                or the accessors below)
 *       p = weir_next_header(p);
 *   }
 * Entries are packed, so they are not aligned: read them with these. */
static inline uint32_t weir_header_name_len(const uint8_t *h) {
    return (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
}
static inline int32_t weir_header_value_len(const uint8_t *h) {
    return (int32_t)((uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24);
}
static inline const uint8_t *weir_header_name(const uint8_t *h) { return h + 8; }
/* NULL for a null value. */
static inline const uint8_t *weir_header_value(const uint8_t *h) {
    return weir_header_value_len(h) < 0 ? NULL : h + 8 + weir_header_name_len(h);
}
static inline const uint8_t *weir_next_header(const uint8_t *h) {
    return h + 8 + weir_header_name_len(h) + weir_len(weir_header_value_len(h));
}

/* String helpers that need no libc (plain loops, so a -nostdlib build links). */
static inline uint32_t weir_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n])
        n++;
    return n;
}
static inline int weir_bytes_equal(const uint8_t *a, const char *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != (uint8_t)b[i])
            return 0;
    return 1;
}

/* Looks up `name` in a config block (the `weir_init` argument). Returns the
 * value and stores its length in *len, or returns NULL if absent. */
static inline const uint8_t *weir_config_get(const uint8_t *cfg, int32_t cfg_len, const char *name,
                                             uint32_t *len) {
    if (cfg_len < 4)
        return NULL;
    uint32_t count = weir_header_name_len(cfg);
    const uint8_t *p = cfg + 4;
    uint32_t name_len = weir_strlen(name);
    for (uint32_t i = 0; i < count; i++) {
        if (weir_header_name_len(p) == name_len && weir_bytes_equal(weir_header_name(p), name, name_len)) {
            *len = weir_len(weir_header_value_len(p));
            return weir_header_value(p);
        }
        p = weir_next_header(p);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Logging                                                              */
/* ------------------------------------------------------------------ */

static inline void weir_log_str(int32_t level, const char *line) {
    weir_log(level, line, (int32_t)weir_strlen(line));
}
/* Logs at error level: the reason shown when the call returns non-zero. */
static inline void weir_log_error(const char *line) { weir_log_str(WEIR_LOG_ERROR, line); }

/* ------------------------------------------------------------------ */
/* Building output                                                      */
/* ------------------------------------------------------------------ */

/* An output batch over a buffer the plugin owns (static or malloc'd, any
 * size >= 48). Records are appended with weir_output_push, which sends
 * the batch with weir.emit first when the next record does not fit. Call
 * weir_output_flush at the end of weir_process. */
typedef struct weir_output {
    uint8_t *buf;
    uint32_t cap;
    uint32_t len;   /* bytes used, batch header included */
    int32_t status; /* first failed weir.emit result, else WEIR_EMIT_OK */
} weir_output;

/* Starts an empty batch in `buf` (8-aligned, `cap` bytes). */
static inline void weir_output_init(weir_output *out, void *buf, uint32_t cap) {
    out->buf = (uint8_t *)buf;
    out->cap = cap;
    out->len = WEIR_BATCH_HEADER_LEN;
    out->status = WEIR_EMIT_OK;
    ((weir_batch *)buf)->count = 0;
    ((weir_batch *)buf)->reserved = 0;
}

/* Sends what has been appended (if anything) and starts a new batch.
 * Returns WEIR_EMIT_OK or the first error weir.emit returned. */
static inline int32_t weir_output_flush(weir_output *out) {
    weir_batch *b = (weir_batch *)out->buf;
    if (b->count > 0) {
        int32_t rc = weir_emit(out->buf, (int32_t)out->len);
        if (rc != WEIR_EMIT_OK && out->status == WEIR_EMIT_OK)
            out->status = rc;
    }
    b->count = 0;
    out->len = WEIR_BATCH_HEADER_LEN;
    return out->status;
}

/* Appends one record. `key`/`value` may be NULL for null; `headers` is an
 * encoded header block of `headers_len` bytes and `header_count` entries
 * (for example weir_record_headers of an input record), or NULL/0/0.
 * Returns 0, or -1 if the record can never fit the buffer. */
static inline int32_t weir_output_push(weir_output *out, uint32_t topic, int32_t partition, int64_t timestamp,
                                       const void *key, int32_t key_len, const void *value, int32_t value_len,
                                       const void *headers, uint32_t headers_len, uint32_t header_count) {
    if (!key)
        key_len = WEIR_NULL_LEN;
    if (!value)
        value_len = WEIR_NULL_LEN;
    uint32_t size = weir_record_size(key_len, value_len, headers_len);
    if (size > out->cap - WEIR_BATCH_HEADER_LEN)
        return -1;
    if (out->cap - out->len < size)
        weir_output_flush(out);
    weir_record *r = (weir_record *)(out->buf + out->len);
    r->offset = 0;
    r->timestamp = timestamp;
    r->partition = partition;
    r->topic = topic;
    r->key_len = key_len;
    r->value_len = value_len;
    r->headers_len = headers_len;
    r->header_count = header_count;
    uint8_t *p = (uint8_t *)r + WEIR_RECORD_HEADER_LEN;
    if (key_len > 0)
        __builtin_memcpy(p, key, (size_t)key_len);
    p += weir_len(key_len);
    if (value_len > 0)
        __builtin_memcpy(p, value, (size_t)value_len);
    p += weir_len(value_len);
    if (headers_len > 0)
        __builtin_memcpy(p, headers, headers_len);
    p += headers_len;
    while (p < (uint8_t *)r + size)
        *p++ = 0;
    out->len += size;
    ((weir_batch *)out->buf)->count += 1;
    return 0;
}

/* Appends a record with this key and value to the first sink topic, the
 * partition chosen by key, no timestamp and no headers: the common case. */
static inline int32_t weir_output_emit(weir_output *out, const void *key, int32_t key_len, const void *value,
                                       int32_t value_len) {
    return weir_output_push(out, 0, WEIR_ANY_PARTITION, WEIR_NO_TIMESTAMP, key, key_len, value, value_len, NULL, 0,
                            0);
}

/* ------------------------------------------------------------------ */
/* Standard exports: use each macro once, at file scope                 */
/* ------------------------------------------------------------------ */

/* Defines `weir_abi_version` for ABI 1.0. */
#define WEIR_DEFINE_ABI_VERSION()                                                                                      \
    WEIR_EXPORT(WEIR_EXPORT_ABI_VERSION) int32_t weir_abi_version(void) { return WEIR_ABI_VERSION; }

/* Defines `weir_abi_version` for ABI 1.1: use it instead when the plugin
 * defines weir_tick or calls weir_sink_topics. */
#define WEIR_DEFINE_ABI_VERSION_1_1()                                                                                  \
    WEIR_EXPORT(WEIR_EXPORT_ABI_VERSION) int32_t weir_abi_version(void) { return WEIR_ABI_VERSION_1_1; }

/* Defines `weir_input_buffer` over a static buffer of `bytes` bytes (no
 * libc needed). A batch larger than that traps with a logged reason, so
 * keep pipeline.batch_size * record size below it. */
#define WEIR_DEFINE_STATIC_INPUT_BUFFER(bytes)                                                                         \
    static _Alignas(8) uint8_t weir_static_input_[(bytes)];                                                            \
    WEIR_EXPORT(WEIR_EXPORT_INPUT_BUFFER) void *weir_input_buffer(int32_t size) {                                      \
        if (size < 0 || (uint32_t)size > sizeof weir_static_input_) {                                                  \
            weir_log_error("weir_input_buffer: batch larger than the static input buffer");                            \
            __builtin_trap();                                                                                          \
        }                                                                                                              \
        return weir_static_input_;                                                                                     \
    }

/* Defines `weir_input_buffer` with malloc (wasi-libc): one buffer, grown
 * when a larger batch comes, kept across calls (so it is part of the
 * checkpointed state, like everything in memory). malloc returns 16-aligned
 * memory, which the ABI's 8-alignment needs. Traps if memory runs out. */
#define WEIR_DEFINE_INPUT_BUFFER()                                                                                     \
    static void *weir_input_ptr_;                                                                                      \
    static uint32_t weir_input_cap_;                                                                                   \
    WEIR_EXPORT(WEIR_EXPORT_INPUT_BUFFER) void *weir_input_buffer(int32_t size) {                                      \
        extern void *malloc(size_t);                                                                                   \
        extern void free(void *);                                                                                      \
        if (size < 0) {                                                                                                \
            weir_log_error("weir_input_buffer: negative size");                                                        \
            __builtin_trap();                                                                                          \
        }                                                                                                              \
        if ((uint32_t)size > weir_input_cap_ || !weir_input_ptr_) {                                                    \
            free(weir_input_ptr_);                                                                                     \
            uint32_t cap = weir_input_cap_ ? weir_input_cap_ : 4096;                                                   \
            while (cap < (uint32_t)size)                                                                               \
                cap *= 2;                                                                                              \
            weir_input_ptr_ = malloc(cap);                                                                             \
            if (!weir_input_ptr_ || ((uintptr_t)weir_input_ptr_ & 7)) {                                                \
                weir_log_error("weir_input_buffer: out of memory");                                                    \
                __builtin_trap();                                                                                      \
            }                                                                                                          \
            weir_input_cap_ = cap;                                                                                     \
        }                                                                                                              \
        return weir_input_ptr_;                                                                                        \
    }

#ifdef __cplusplus
}
#endif

#endif /* WEIR_PLUGIN_H */
