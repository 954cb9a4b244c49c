;; mirror: a hand-written Weir plugin, no SDK (ABI version 1, docs/ABI.md).
;;
;; It hands every input batch straight back to the host as output: the
;; input and output batch layouts are the same, so each record goes to sink
;; topic index = its source topic index, to the same partition number, with
;; the same key, value, headers and timestamp. It also counts the records
;; it has seen in a mutable global that it does not export: state that only
;; a snapshot of the whole instance can carry across a restart.
(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (import "weir" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 2)

  ;; Records seen so far (not exported).
  (global $seen (mut i64) (i64.const 0))

  ;; The input buffer starts at 64 KiB (page 1) and grows on demand.
  (global $input i32 (i32.const 65536))

  (data (i32.const 1024) "mirror: emit refused the batch")

  (func (export "weir_abi_version") (result i32) (i32.const 1))

  ;; weir_input_buffer(size) -> ptr: grow memory until [65536, 65536+size) fits.
  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (local $need i32)
    ;; pages needed = ceil((65536 + size) / 65536)
    (local.set $need
      (i32.shr_u (i32.add (local.get $size) (i32.const 131071)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (unreachable)))))
    (global.get $input))

  ;; weir_process(ptr, len) -> status
  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    ;; count += batch.count (first u32 of the batch)
    (global.set $seen
      (i64.add (global.get $seen) (i64.extend_i32_u (i32.load (local.get $ptr)))))
    (if (i32.ne (call $emit (local.get $ptr) (local.get $len)) (i32.const 0))
      (then
        (call $log (i32.const 1) (i32.const 1024) (i32.const 30))
        (return (i32.const 1))))
    (i32.const 0))
)
