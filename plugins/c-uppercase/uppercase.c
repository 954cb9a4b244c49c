/*
 * c_uppercase: a stateless map in C, the twin of plugins/uppercase. Every
 * record's value is upper-cased (ASCII); key, headers and timestamp pass
 * through; output goes to the first sink topic, partitioned by key.
 *
 * The output layout is the input layout, so it edits its input batch in
 * place and hands the whole buffer back with one weir.emit: no copy, no
 * allocation. Built by host/build.rs:
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I plugin-sdk/c \
 *         -o plugins/c_uppercase.wasm plugins/c-uppercase/uppercase.c
 */
#include "weir_plugin.h"

WEIR_DEFINE_ABI_VERSION()
WEIR_DEFINE_INPUT_BUFFER()

WEIR_EXPORT(WEIR_EXPORT_PROCESS) int32_t weir_process(void *batch, int32_t len) {
    uint32_t count = ((weir_batch *)batch)->count;
    weir_record *r = weir_first_record(batch);
    for (uint32_t i = 0; i < count; i++, r = weir_next_record(r)) {
        uint8_t *value = weir_record_value(r);
        for (int32_t j = 0; j < r->value_len; j++)
            if (value[j] >= 'a' && value[j] <= 'z')
                value[j] -= 'a' - 'A';
        r->topic = 0;                        /* the first sink topic */
        r->partition = WEIR_ANY_PARTITION;   /* the host's partitioner, by key */
    }
    int32_t rc = weir_emit(batch, len);
    if (rc != WEIR_EMIT_OK) {
        weir_log_error(rc == WEIR_EMIT_BAD_TOPIC ? "c_uppercase: no sink topic 0" : "c_uppercase: weir.emit refused the batch");
        return 1;
    }
    return WEIR_STATUS_OK;
}
