;; wat_uppercase: a stateless map written by hand in WAT, no SDK (ABI
;; version 1, docs/ABI.md); the twin of plugins/uppercase.
;;
;; Every record's value is upper-cased (ASCII a-z); key, headers and
;; timestamp pass through; output goes to sink topic 0 with the partition
;; chosen by key. The output layout is the input layout, so it edits the
;; input batch in place and emits the whole buffer back in one call.
(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (import "weir" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 1024) "wat_uppercase: weir.emit refused the batch")   ;; 42 bytes

  (func (export "weir_abi_version") (result i32) (i32.const 1))

  ;; The input buffer starts at 64 KiB and memory grows until it fits.
  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (local.get $size) (i32.const 131071)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (unreachable)))))
    (i32.const 65536))

  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (local $n i32) (local $rec i32) (local $klen i32) (local $vlen i32)
    (local $p i32) (local $end i32) (local $c i32)
    (local.set $n (i32.load (local.get $ptr)))
    (local.set $rec (i32.add (local.get $ptr) (i32.const 8)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $klen (i32.load offset=24 (local.get $rec)))
        (local.set $klen (select (local.get $klen) (i32.const 0) (i32.ge_s (local.get $klen) (i32.const 0))))
        (local.set $vlen (i32.load offset=28 (local.get $rec)))
        (local.set $vlen (select (local.get $vlen) (i32.const 0) (i32.ge_s (local.get $vlen) (i32.const 0))))
        ;; upper-case the value in place
        (local.set $p (i32.add (i32.add (local.get $rec) (i32.const 40)) (local.get $klen)))
        (local.set $end (i32.add (local.get $p) (local.get $vlen)))
        (block $value_done
          (loop $byte
            (br_if $value_done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $c (i32.load8_u (local.get $p)))
            (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
              (then (i32.store8 (local.get $p) (i32.sub (local.get $c) (i32.const 32)))))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $byte)))
        (i32.store offset=16 (local.get $rec) (i32.const -1))   ;; partition: by key
        (i32.store offset=20 (local.get $rec) (i32.const 0))    ;; sink topic 0
        ;; next record: align8(40 + key + value + headers)
        (local.set $rec
          (i32.add (local.get $rec)
            (i32.and (i32.add (i32.add (i32.add (i32.const 47) (local.get $klen)) (local.get $vlen))
                              (i32.load offset=32 (local.get $rec)))
                     (i32.const -8))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (if (i32.ne (call $emit (local.get $ptr) (local.get $len)) (i32.const 0))
      (then
        (call $log (i32.const 1) (i32.const 1024) (i32.const 42))
        (return (i32.const 1))))
    (i32.const 0))
)
