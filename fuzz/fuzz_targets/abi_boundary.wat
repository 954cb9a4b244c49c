;; abi_boundary: a Weir plugin (ABI version 1, docs/ABI.md) whose behaviour
;; is data, not code. The fuzz target compiles it once and, in every fresh
;; instance, writes a "script" into memory and two mutable globals (through
;; PluginInstance::snapshot/restore). The plugin then hands the host whatever
;; pointers and lengths the script says.
;;
;; Globals (mutable, in index order; the snapshot sees them in this order):
;;   0 $ib_mode  weir_input_buffer behaviour, bits 0-1:
;;               0 = grow memory like mirror.wat and return 65536
;;               1 = return $ib_arg as is (any pointer)
;;               2 = trap
;;               3 = return memory_bytes - size + $ib_arg (the end of memory)
;;               bit 2: run the script first (calls into the host from
;;               inside weir_input_buffer)
;;   1 $ib_arg   the pointer / offset for modes 1 and 3
;;   2 $calls    (i64) weir_process / weir_init calls so far
;;   3 $last     result of the last weir.emit / WASI call
;;
;; Script, at address 4096:
;;   4096  len:u32   bytes of script after this field (capped at 8192)
;;   4100  status:i32 what weir_process / weir_init return when the script
;;                    runs off its end
;;   4104  ops, at most 64 executed, each an opcode byte (taken mod 14)
;;         followed by little-endian operands:
;;     0  EMIT       p:i32 l:i32          weir.emit(p, l)
;;     1  EMIT_INPUT                      weir.emit(ptr, len) of the call
;;     2  EMIT_REL   off:i32 l:i32        weir.emit(ptr + off, l)
;;     3  LOG        lvl:i32 p:i32 l:i32  weir.log(lvl, p, l)
;;     4  FD_WRITE   fd:i32 iovs:i32 n:i32 nw:i32   WASI fd_write
;;     5  POKE       addr:i32 n:u8 bytes[n]         copy bytes to addr
;;     6  POKE_REL   off:i32 n:u8 bytes[n]          copy bytes to ptr + off
;;     7  GROW       pages:u8             memory.grow(pages & 7) while < 32 pages
;;     8  TRAP                            unreachable
;;     9  RETURN     status:i32           return status
;;     10 PROC_EXIT  code:i32             WASI proc_exit(code)
;;     11 FD_READ    fd:i32 iovs:i32 n:i32 nr:i32   WASI fd_read
;;     12 RET_LAST                        return $last
;;     13 ARGS_SIZES p1:i32 p2:i32        WASI args_sizes_get(p1, p2)
;;
;; Everything is deterministic (no clocks, no random_get), so a crash
;; reproduces from its input alone.
(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (import "weir" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 2)

  (global $ib_mode (mut i32) (i32.const 0))
  (global $ib_arg (mut i32) (i32.const 0))
  (global $calls (mut i64) (i64.const 0))
  (global $last (mut i32) (i32.const 0))

  (func (export "weir_abi_version") (result i32) (i32.const 1))

  ;; Grows memory so that [0, end) fits; traps if it cannot.
  (func $ensure (param $end i32)
    (local $need i32)
    (local.set $need
      (i32.wrap_i64
        (i64.shr_u
          (i64.add (i64.extend_i32_u (local.get $end)) (i64.const 65535))
          (i64.const 16))))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (unreachable))))))

  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (local $m i32)
    (if (i32.and (global.get $ib_mode) (i32.const 4))
      (then (drop (call $run (i32.const 65536) (local.get $size)))))
    (local.set $m (i32.and (global.get $ib_mode) (i32.const 3)))
    (if (i32.eq (local.get $m) (i32.const 1))
      (then (return (global.get $ib_arg))))
    (if (i32.eq (local.get $m) (i32.const 2))
      (then (unreachable)))
    (if (i32.eq (local.get $m) (i32.const 3))
      (then
        (return
          (i32.add
            (i32.sub (i32.shl (memory.size) (i32.const 16)) (local.get $size))
            (global.get $ib_arg)))))
    (call $ensure (i32.add (local.get $size) (i32.const 65536)))
    (i32.const 65536))

  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (call $run (local.get $ptr) (local.get $len)))

  (func (export "weir_init") (param $ptr i32) (param $len i32) (result i32)
    (call $run (local.get $ptr) (local.get $len)))

  ;; The interpreter.
  (func $run (param $ptr i32) (param $len i32) (result i32)
    (local $pc i32) (local $end i32) (local $n i32) (local $steps i32)
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    (local.set $n (i32.load (i32.const 4096)))
    (if (i32.gt_u (local.get $n) (i32.const 8192))
      (then (local.set $n (i32.const 8192))))
    (local.set $end (i32.add (i32.const 4100) (local.get $n)))
    (local.set $pc (i32.const 4104))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $pc) (local.get $end)))
        (br_if $done (i32.ge_u (local.get $steps) (i32.const 64)))
        (local.set $steps (i32.add (local.get $steps) (i32.const 1)))
        (local.set $pc (i32.add (local.get $pc) (i32.const 1)))
        (block $op13 (block $op12 (block $op11 (block $op10 (block $op9
        (block $op8 (block $op7 (block $op6 (block $op5 (block $op4
        (block $op3 (block $op2 (block $op1 (block $op0
          (br_table $op0 $op1 $op2 $op3 $op4 $op5 $op6 $op7 $op8 $op9
                    $op10 $op11 $op12 $op13
            (i32.rem_u (i32.load8_u offset=0 (i32.sub (local.get $pc) (i32.const 1)))
                       (i32.const 14))))
        ;; 0 EMIT p l
        (global.set $last
          (call $emit (i32.load (local.get $pc)) (i32.load offset=4 (local.get $pc))))
        (local.set $pc (i32.add (local.get $pc) (i32.const 8)))
        (br $next))
        ;; 1 EMIT_INPUT
        (global.set $last (call $emit (local.get $ptr) (local.get $len)))
        (br $next))
        ;; 2 EMIT_REL off l
        (global.set $last
          (call $emit
            (i32.add (local.get $ptr) (i32.load (local.get $pc)))
            (i32.load offset=4 (local.get $pc))))
        (local.set $pc (i32.add (local.get $pc) (i32.const 8)))
        (br $next))
        ;; 3 LOG lvl p l
        (call $log
          (i32.load (local.get $pc))
          (i32.load offset=4 (local.get $pc))
          (i32.load offset=8 (local.get $pc)))
        (local.set $pc (i32.add (local.get $pc) (i32.const 12)))
        (br $next))
        ;; 4 FD_WRITE fd iovs n nw
        (global.set $last
          (call $fd_write
            (i32.load (local.get $pc))
            (i32.load offset=4 (local.get $pc))
            (i32.load offset=8 (local.get $pc))
            (i32.load offset=12 (local.get $pc))))
        (local.set $pc (i32.add (local.get $pc) (i32.const 16)))
        (br $next))
        ;; 5 POKE addr n bytes
        (local.set $n (i32.load8_u offset=4 (local.get $pc)))
        (memory.copy
          (i32.load (local.get $pc))
          (i32.add (local.get $pc) (i32.const 5))
          (local.get $n))
        (local.set $pc (i32.add (local.get $pc) (i32.add (i32.const 5) (local.get $n))))
        (br $next))
        ;; 6 POKE_REL off n bytes
        (local.set $n (i32.load8_u offset=4 (local.get $pc)))
        (memory.copy
          (i32.add (local.get $ptr) (i32.load (local.get $pc)))
          (i32.add (local.get $pc) (i32.const 5))
          (local.get $n))
        (local.set $pc (i32.add (local.get $pc) (i32.add (i32.const 5) (local.get $n))))
        (br $next))
        ;; 7 GROW pages
        (if (i32.lt_u (memory.size) (i32.const 32))
          (then
            (drop (memory.grow (i32.and (i32.load8_u (local.get $pc)) (i32.const 7))))))
        (local.set $pc (i32.add (local.get $pc) (i32.const 1)))
        (br $next))
        ;; 8 TRAP
        (unreachable))
        ;; 9 RETURN status
        (return (i32.load (local.get $pc))))
        ;; 10 PROC_EXIT code
        (call $proc_exit (i32.load (local.get $pc)))
        (local.set $pc (i32.add (local.get $pc) (i32.const 4)))
        (br $next))
        ;; 11 FD_READ fd iovs n nr
        (global.set $last
          (call $fd_read
            (i32.load (local.get $pc))
            (i32.load offset=4 (local.get $pc))
            (i32.load offset=8 (local.get $pc))
            (i32.load offset=12 (local.get $pc))))
        (local.set $pc (i32.add (local.get $pc) (i32.const 16)))
        (br $next))
        ;; 12 RET_LAST
        (return (global.get $last)))
        ;; 13 ARGS_SIZES p1 p2
        (global.set $last
          (call $args_sizes_get (i32.load (local.get $pc)) (i32.load offset=4 (local.get $pc))))
        (local.set $pc (i32.add (local.get $pc) (i32.const 8)))
        (br $next)))
    (i32.load (i32.const 4100)))
)
