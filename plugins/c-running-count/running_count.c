/*
 * c_running_count: stateful, the twin of plugins/running-count in C. For
 * every record it emits the record's key and the number of records seen
 * with that key so far, as decimal text, to the first sink topic,
 * partitioned by key. A null key counts as the empty key (and stays null
 * in the output).
 *
 * The counts live in an open-addressing hash table whose slots and keys
 * come from wasi-libc's malloc: ordinary C heap data in linear memory,
 * together with the allocator's own bookkeeping and the `table` globals
 * below. A checkpoint snapshots that memory (and __stack_pointer); a
 * restore puts it back, so the plugin never saves anything by hand.
 * Built by host/build.rs:
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I plugin-sdk/c \
 *         -o plugins/c_running_count.wasm plugins/c-running-count/running_count.c
 */
#include <stdlib.h>
#include <string.h>

#include "weir_plugin.h"

WEIR_DEFINE_ABI_VERSION()
WEIR_DEFINE_INPUT_BUFFER()

typedef struct entry {
    uint8_t *key; /* NULL: empty slot (an empty key is a 1-byte allocation) */
    uint32_t key_len;
    uint32_t hash;
    uint64_t count;
} entry;

static entry *table;
static uint32_t capacity; /* a power of two */
static uint32_t used;

/* The output buffer: flushed with weir.emit when full and at batch end. */
static _Alignas(8) uint8_t out_buf[256 * 1024];

static uint32_t fnv1a(const uint8_t *p, uint32_t n) {
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static int grow(void) {
    uint32_t new_cap = capacity ? capacity * 2 : 1024;
    entry *t = calloc(new_cap, sizeof *t);
    if (!t)
        return -1;
    for (uint32_t i = 0; i < capacity; i++) {
        if (!table[i].key)
            continue;
        uint32_t j = table[i].hash & (new_cap - 1);
        while (t[j].key)
            j = (j + 1) & (new_cap - 1);
        t[j] = table[i];
    }
    free(table);
    table = t;
    capacity = new_cap;
    return 0;
}

/* The count slot for `key`, inserted with count 0 if new; NULL if out of memory. */
static uint64_t *slot(const uint8_t *key, uint32_t key_len) {
    if ((used + 1) * 4 > capacity * 3 && grow() != 0)
        return NULL;
    uint32_t h = fnv1a(key, key_len);
    uint32_t i = h & (capacity - 1);
    for (;; i = (i + 1) & (capacity - 1)) {
        entry *e = &table[i];
        if (!e->key)
            break;
        if (e->hash == h && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
            return &e->count;
    }
    uint8_t *copy = malloc(key_len ? key_len : 1);
    if (!copy)
        return NULL;
    memcpy(copy, key, key_len);
    table[i] = (entry){.key = copy, .key_len = key_len, .hash = h, .count = 0};
    used++;
    return &table[i].count;
}

/* Decimal digits of n into the end of buf[20]; returns the first digit. */
static const uint8_t *format_u64(uint64_t n, uint8_t buf[20], int32_t *len) {
    uint8_t *p = buf + 20;
    do {
        *--p = (uint8_t)('0' + n % 10);
        n /= 10;
    } while (n);
    *len = (int32_t)(buf + 20 - p);
    return p;
}

WEIR_EXPORT(WEIR_EXPORT_PROCESS) int32_t weir_process(void *batch, int32_t len) {
    (void)len;
    weir_output out;
    weir_output_init(&out, out_buf, sizeof out_buf);
    uint32_t count = ((weir_batch *)batch)->count;
    weir_record *r = weir_first_record(batch);
    for (uint32_t i = 0; i < count; i++, r = weir_next_record(r)) {
        const uint8_t *key = weir_record_key(r);
        uint64_t *c = slot(key ? key : (const uint8_t *)"", weir_len(r->key_len));
        if (!c) {
            weir_log_error("c_running_count: out of memory");
            return 1;
        }
        *c += 1;
        uint8_t digits[20];
        int32_t n;
        const uint8_t *text = format_u64(*c, digits, &n);
        if (weir_output_emit(&out, key, r->key_len, text, n) != 0) {
            weir_log_error("c_running_count: key larger than the output buffer");
            return 1;
        }
    }
    if (weir_output_flush(&out) != WEIR_EMIT_OK) {
        weir_log_error("c_running_count: weir.emit refused the output");
        return 3;
    }
    return WEIR_STATUS_OK;
}
