// as_uppercase: a stateless map in AssemblyScript, the twin of
// plugins/uppercase. Every record's value is upper-cased (ASCII); key,
// headers and timestamp pass through; output goes to the first sink topic,
// partitioned by key. Built by host/build.rs (see docs/ABI.md, "Writing a
// plugin in AssemblyScript").
import { Batch, Output, ANY_PARTITION, EMIT_OK, STATUS_OK, byteLen, logError } from "../../plugin-sdk/assemblyscript/weir";
export { weir_abi_version, weir_input_buffer } from "../../plugin-sdk/assemblyscript/weir";

const out = new Output();

export function weir_process(ptr: usize, len: i32): i32 {
  out.reset();
  const batch = new Batch(ptr, len);
  let r = batch.next();
  while (r) {
    // Upper-case the value where it lies in the input buffer.
    const v = r.valuePtr;
    const n = byteLen(r.valueLen);
    for (let i: usize = 0; i < n; i++) {
      const c = load<u8>(v + i);
      if (c >= 0x61 && c <= 0x7a) store<u8>(v + i, c - 0x20);
    }
    out.push(0, ANY_PARTITION, r.timestamp, r.keyPtr, r.keyLen, v, r.valueLen, r.headersPtr, r.headersLen, r.headerCount);
    r = batch.next();
  }
  if (out.flush() != EMIT_OK) {
    logError("as_uppercase: weir.emit refused the output");
    return 3;
  }
  return STATUS_OK;
}
