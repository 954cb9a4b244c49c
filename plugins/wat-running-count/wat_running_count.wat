;; wat_running_count: stateful, the twin of plugins/running-count written by
;; hand in WAT, no SDK (ABI version 1, docs/ABI.md).
;;
;; For every record it emits the record's key and the number of records
;; seen with that key so far, as decimal text, to sink topic 0 with the
;; partition chosen by key (-1), no timestamp (-1) and no headers. A null
;; key counts as the empty key and stays null in the output.
;;
;; State: a hash table (linear probing) of 16-byte slots
;;   +0 key_ptr:i32 (0 = empty slot)  +4 key_len:i32  +8 count:i64
;; whose keys are copied into memory from a bump allocator that never
;; frees. The table's address, capacity and fill, and the allocator's
;; pointer, are non-exported mutable globals. A checkpoint snapshots the
;; memory and every mutable global; a restore puts both back.
;;
;; Memory map: [0, 1024) constants, [1024, 1048) digit scratch, and from
;; 4096 on the bump heap (keys, tables, the input and output buffers; a
;; buffer is reallocated, never freed, when a larger batch comes).
;; Memory pages start zeroed and bump memory is never reused, so a fresh
;; allocation reads as zero.
(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (import "weir" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  (data (i32.const 0) "wat_running_count: weir.emit refused the output")   ;; 47 bytes

  (global $heap (mut i32) (i32.const 4096))
  (global $table (mut i32) (i32.const 0))
  (global $cap (mut i32) (i32.const 0))        ;; slots, a power of two
  (global $used (mut i32) (i32.const 0))
  (global $in (mut i32) (i32.const 0))
  (global $in_cap (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  (global $out_cap (mut i32) (i32.const 0))

  ;; $alloc(size) -> ptr: 8-aligned, zeroed, grows memory; traps when it cannot.
  (func $alloc (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $pages i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (unreachable)))
    ;; pages needed = ceil(end / 65536)
    (local.set $pages (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (unreachable)))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; FNV-1a over [ptr, ptr+len).
  (func $hash (param $ptr i32) (param $len i32) (result i32)
    (local $h i32) (local $end i32)
    (local.set $h (i32.const 0x811c9dc5))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $h
          (i32.mul (i32.xor (local.get $h) (i32.load8_u (local.get $ptr))) (i32.const 0x01000193)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $next)))
    (local.get $h))

  ;; Are [a, a+len) and [b, b+len) equal?
  (func $equal (param $a i32) (param $b i32) (param $len i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; The slot of key [ptr, ptr+len) in a table at $t with $cap slots: the
  ;; slot holding that key, or the empty slot where it belongs.
  (func $find (param $t i32) (param $cap i32) (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $slot i32)
    (local.set $i (i32.and (call $hash (local.get $ptr) (local.get $len))
                           (i32.sub (local.get $cap) (i32.const 1))))
    (loop $probe
      (local.set $slot (i32.add (local.get $t) (i32.shl (local.get $i) (i32.const 4))))
      (if (i32.eqz (i32.load (local.get $slot))) (then (return (local.get $slot))))
      (if (i32.eq (i32.load offset=4 (local.get $slot)) (local.get $len))
        (then
          (if (call $equal (i32.load (local.get $slot)) (local.get $ptr) (local.get $len))
            (then (return (local.get $slot))))))
      (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1))
                             (i32.sub (local.get $cap) (i32.const 1))))
      (br $probe))
    (unreachable))

  ;; Doubles the table (1024 slots at first) and re-inserts every key.
  (func $grow_table
    (local $new_cap i32) (local $new i32) (local $i i32) (local $old i32) (local $dst i32)
    (local.set $new_cap
      (select (i32.shl (global.get $cap) (i32.const 1)) (i32.const 1024) (global.get $cap)))
    (local.set $new (call $alloc (i32.shl (local.get $new_cap) (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (global.get $cap)))
        (local.set $old (i32.add (global.get $table) (i32.shl (local.get $i) (i32.const 4))))
        (if (i32.load (local.get $old))
          (then
            (local.set $dst (call $find (local.get $new) (local.get $new_cap)
                                        (i32.load (local.get $old)) (i32.load offset=4 (local.get $old))))
            (i64.store (local.get $dst) (i64.load (local.get $old)))
            (i64.store offset=8 (local.get $dst) (i64.load offset=8 (local.get $old)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $table (local.get $new))
    (global.set $cap (local.get $new_cap)))

  ;; Adds one to the count of key [ptr, ptr+len) and returns the new count.
  (func $bump (param $ptr i32) (param $len i32) (result i64)
    (local $slot i32) (local $copy i32) (local $count i64)
    ;; keep the load factor at most 3/4
    (if (i32.gt_u (i32.mul (i32.add (global.get $used) (i32.const 1)) (i32.const 4))
                  (i32.mul (global.get $cap) (i32.const 3)))
      (then (call $grow_table)))
    (local.set $slot (call $find (global.get $table) (global.get $cap) (local.get $ptr) (local.get $len)))
    (if (i32.eqz (i32.load (local.get $slot)))
      (then
        ;; a new key: copy it (at least 1 byte, so that key_ptr is never 0)
        (local.set $copy (call $alloc (select (local.get $len) (i32.const 1) (local.get $len))))
        (memory.copy (local.get $copy) (local.get $ptr) (local.get $len))
        (i32.store (local.get $slot) (local.get $copy))
        (i32.store offset=4 (local.get $slot) (local.get $len))
        (global.set $used (i32.add (global.get $used) (i32.const 1)))))
    (local.set $count (i64.add (i64.load offset=8 (local.get $slot)) (i64.const 1)))
    (i64.store offset=8 (local.get $slot) (local.get $count))
    (local.get $count))

  ;; Writes n in decimal ending at 1048; returns the first digit's address.
  (func $digits (param $n i64) (result i32)
    (local $p i32)
    (local.set $p (i32.const 1048))
    (loop $next
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.wrap_i64 (i64.add (i64.rem_u (local.get $n) (i64.const 10)) (i64.const 48))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $next (i64.ne (local.get $n) (i64.const 0))))
    (local.get $p))

  (func (export "weir_abi_version") (result i32) (i32.const 1))

  ;; weir_input_buffer(size) -> ptr: 8-aligned, at least size bytes.
  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (global.get $in_cap))
      (then
        (global.set $in (call $alloc (local.get $size)))
        (global.set $in_cap (local.get $size))))
    (global.get $in))

  ;; weir_process(ptr, len) -> status
  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (local $n i32) (local $i i32) (local $rec i32) (local $key_len i32) (local $klen i32)
    (local $o i32) (local $need i32) (local $digits i32) (local $dlen i32) (local $end i32)
    (local.set $n (i32.load (local.get $ptr)))
    ;; Output per record: align8(40 + key + at most 20 digits) <= key + 67,
    ;; and the input record took at least 40 + key: len + 27 * n is enough.
    (local.set $need (i32.add (local.get $len) (i32.mul (local.get $n) (i32.const 27))))
    (if (i32.gt_u (local.get $need) (global.get $out_cap))
      (then
        (global.set $out (call $alloc (local.get $need)))
        (global.set $out_cap (local.get $need))))
    (local.set $rec (i32.add (local.get $ptr) (i32.const 8)))
    (local.set $o (i32.add (global.get $out) (i32.const 8)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $key_len (i32.load offset=24 (local.get $rec)))
        (local.set $klen (select (local.get $key_len) (i32.const 0) (i32.ge_s (local.get $key_len) (i32.const 0))))
        (local.set $digits
          (call $digits (call $bump (i32.add (local.get $rec) (i32.const 40)) (local.get $klen))))
        (local.set $dlen (i32.sub (i32.const 1048) (local.get $digits)))
        ;; the output record header
        (i64.store (local.get $o) (i64.const 0))                       ;; offset
        (i64.store offset=8 (local.get $o) (i64.const -1))             ;; timestamp: none
        (i32.store offset=16 (local.get $o) (i32.const -1))            ;; partition: by key
        (i32.store offset=20 (local.get $o) (i32.const 0))             ;; topic 0
        (i32.store offset=24 (local.get $o) (local.get $key_len))      ;; key as in the input
        (i32.store offset=28 (local.get $o) (local.get $dlen))         ;; value: the digits
        (i64.store offset=32 (local.get $o) (i64.const 0))             ;; no headers
        (memory.copy (i32.add (local.get $o) (i32.const 40))
                     (i32.add (local.get $rec) (i32.const 40)) (local.get $klen))
        (memory.copy (i32.add (i32.add (local.get $o) (i32.const 40)) (local.get $klen))
                     (local.get $digits) (local.get $dlen))
        ;; zero padding up to the next multiple of 8
        (local.set $end (i32.add (i32.add (local.get $o) (i32.const 40))
                                 (i32.add (local.get $klen) (local.get $dlen))))
        (local.set $o (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
        (memory.fill (local.get $end) (i32.const 0) (i32.sub (local.get $o) (local.get $end)))
        ;; the next input record: align8(40 + key + value + headers)
        (local.set $rec
          (i32.add (local.get $rec)
            (i32.and
              (i32.add
                (i32.add (i32.add (i32.const 47) (local.get $klen))
                         (select (i32.load offset=28 (local.get $rec)) (i32.const 0)
                                 (i32.ge_s (i32.load offset=28 (local.get $rec)) (i32.const 0))))
                (i32.load offset=32 (local.get $rec)))
              (i32.const -8))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; the batch header: count, reserved
    (i32.store (global.get $out) (local.get $n))
    (i32.store offset=4 (global.get $out) (i32.const 0))
    (if (i32.ne (call $emit (global.get $out) (i32.sub (local.get $o) (global.get $out))) (i32.const 0))
      (then
        (call $log (i32.const 1) (i32.const 0) (i32.const 47))
        (return (i32.const 3))))
    (i32.const 0))
)
