//! Hostile plugins, hand-written in WAT.
//!
//! Each one is the same well-behaved mirror (every input batch is emitted
//! back unchanged) until it meets a record whose value starts with
//! `poison`: then it misbehaves in its own way. So one record, at a known
//! offset of a known partition, is the poison, and every other record and
//! partition shows whether the host kept going around it.

/// One hostile behaviour.
pub struct Hostile {
    /// A short name, used as the module's file name.
    pub name: &'static str,
    /// What the host should report: `FaultKind::code`.
    pub kind: &'static str,
    /// Extra imports.
    imports: &'static str,
    /// Extra functions and data; must define `$poison (result i32)`.
    body: &'static str,
}

/// Every hostile behaviour the sandbox must hold against.
pub const ALL: &[Hostile] = &[
    Hostile {
        name: "trap",
        kind: "trap",
        imports: "",
        body: "(func $poison (result i32) unreachable)",
    },
    Hostile {
        name: "endless_loop",
        kind: "timeout",
        imports: "",
        body: "(func $poison (result i32) (loop $forever (br $forever)) (i32.const 0))",
    },
    Hostile {
        // Grows 1 MiB at a time and writes all of it, until refused.
        name: "memory_bomb",
        kind: "memory-limit",
        imports: "",
        body: r#"
  (func $poison (result i32) (local $page i32)
    (loop $more
      (local.set $page (memory.grow (i32.const 16)))
      (if (i32.eq (local.get $page) (i32.const -1)) (then unreachable))
      (memory.fill (i32.shl (local.get $page) (i32.const 16)) (i32.const 171) (i32.const 1048576))
      (br $more))
    (i32.const 0))"#,
    },
    Hostile {
        name: "deep_recursion",
        kind: "stack-overflow",
        imports: "",
        body: r#"
  (func $down (param $depth i32) (result i32)
    (i32.add (call $down (i32.add (local.get $depth) (i32.const 1))) (i32.const 1)))
  (func $poison (result i32) (call $down (i32.const 0)))"#,
    },
    Hostile {
        // A length that runs past the end of memory.
        name: "bad_emit_pointer",
        kind: "bad-pointer",
        imports: "",
        body: "(func $poison (result i32) (call $emit (i32.const 65536) (i32.const 2147483647)))",
    },
    Hostile {
        // A negative pointer.
        name: "bad_log_pointer",
        kind: "bad-pointer",
        imports: "",
        body: "(func $poison (result i32) (call $log (i32.const 1) (i32.const -16) (i32.const 64)) (i32.const 0))",
    },
    Hostile {
        // WASI fd_write with an iovec whose buffer lies outside memory
        // (WASI traps on it, as its spec says).
        name: "bad_wasi_iovec",
        kind: "bad-pointer",
        imports: r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#,
        body: r#"
  (func $poison (result i32)
    (i32.store (i32.const 2048) (i32.const 2147418112))
    (i32.store (i32.const 2052) (i32.const 100))
    (call $fd_write (i32.const 1) (i32.const 2048) (i32.const 1) (i32.const 2056)))"#,
    },
    Hostile {
        // One record with an 8 MiB value.
        name: "huge_record",
        kind: "output-limit",
        imports: "",
        body: r#"
  (func $poison (result i32) (local $at i32)
    (local.set $at (memory.grow (i32.const 130)))
    (if (i32.eq (local.get $at) (i32.const -1)) (then unreachable))
    (local.set $at (i32.shl (local.get $at) (i32.const 16)))
    (i32.store (local.get $at) (i32.const 1))
    ;; the record at $at + 8: any partition, null key, 8 MiB value
    (i32.store offset=24 (local.get $at) (i32.const -1))
    (i32.store offset=32 (local.get $at) (i32.const -1))
    (i32.store offset=36 (local.get $at) (i32.const 8388608))
    (call $emit (local.get $at) (i32.const 8388656)))"#,
    },
    Hostile {
        // One emit of a million (empty) records: 40 MB of headers.
        name: "million_records",
        kind: "output-limit",
        imports: "",
        body: r#"
  (func $poison (result i32) (local $at i32)
    (local.set $at (memory.grow (i32.const 612)))
    (if (i32.eq (local.get $at) (i32.const -1)) (then unreachable))
    (local.set $at (i32.shl (local.get $at) (i32.const 16)))
    (i32.store (local.get $at) (i32.const 1000000))
    (call $emit (local.get $at) (i32.const 40000008)))"#,
    },
    Hostile {
        // Tries to open a host file through WASI; there is no preopened
        // directory, so it gets an errno and says so.
        name: "wasi_open",
        kind: "error-status",
        imports: r#"(import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#,
        body: r#"
  (data (i32.const 1100) "/etc/passwd")
  (data (i32.const 1200) "path_open(/etc/passwd) was refused")
  (func $poison (result i32)
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 1100) (i32.const 11)
                   (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 2048)))
      (then (return (i32.const 0))))
    (call $log (i32.const 1) (i32.const 1200) (i32.const 34))
    (i32.const 5))"#,
    },
    Hostile {
        name: "proc_exit",
        kind: "exit",
        imports: r#"(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"#,
        body: "(func $poison (result i32) (call $proc_exit (i32.const 7)) (i32.const 0))",
    },
];

/// Emits a record (value `partial-output`) for the poisoned record, then
/// traps: the faulted batch has output already in the producer's hands.
/// Under exactly-once none of it may become visible.
pub const PARTIAL: Hostile = Hostile {
    name: "emit_then_trap",
    kind: "trap",
    imports: "",
    body: r#"
  ;; A batch of one record: any partition, no timestamp, null key,
  ;; value "partial-output" (14 bytes, padded to 16).
  (data (i32.const 4096)
    "\01\00\00\00\00\00\00\00"
    "\00\00\00\00\00\00\00\00" "\ff\ff\ff\ff\ff\ff\ff\ff"
    "\ff\ff\ff\ff" "\00\00\00\00" "\ff\ff\ff\ff" "\0e\00\00\00"
    "\00\00\00\00" "\00\00\00\00"
    "partial-output\00\00")
  (func $poison (result i32)
    (if (call $emit (i32.const 4096) (i32.const 64)) (then (return (i32.const 9))))
    unreachable)"#,
};

impl Hostile {
    /// The module's WAT text.
    pub fn wat(&self) -> String {
        SKELETON
            .replace(";; IMPORTS", self.imports)
            .replace(";; BODY", self.body)
    }
}

/// The well-behaved part every hostile plugin shares (ABI v1, see
/// docs/ABI.md): a mirror that calls `$poison` for a poisoned record.
const SKELETON: &str = r#"
(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (import "weir" "log" (func $log (param i32 i32 i32)))
  ;; IMPORTS
  (memory (export "memory") 2)
  (global $input i32 (i32.const 65536))

  (func (export "weir_abi_version") (result i32) (i32.const 1))

  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (local.get $size) (i32.const 131071)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (unreachable)))))
    (global.get $input))

  ;; BODY

  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (local $n i32) (local $rec i32) (local $klen i32) (local $vlen i32)
    (local $value i32) (local $status i32)
    (local.set $n (i32.load (local.get $ptr)))
    (local.set $rec (i32.add (local.get $ptr) (i32.const 8)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $klen (i32.load offset=24 (local.get $rec)))
        (local.set $vlen (i32.load offset=28 (local.get $rec)))
        (if (i32.lt_s (local.get $klen) (i32.const 0)) (then (local.set $klen (i32.const 0))))
        (if (i32.lt_s (local.get $vlen) (i32.const 0)) (then (local.set $vlen (i32.const 0))))
        (local.set $value (i32.add (i32.add (local.get $rec) (i32.const 40)) (local.get $klen)))
        ;; value starts with "poison"?
        (if (i32.and
              (i32.ge_s (local.get $vlen) (i32.const 6))
              (i32.and
                (i32.eq (i32.load (local.get $value)) (i32.const 0x73696f70))
                (i32.eq (i32.load16_u offset=4 (local.get $value)) (i32.const 0x6e6f))))
          (then
            (local.set $status (call $poison))
            (if (local.get $status) (then (return (local.get $status))))))
        ;; next record: 40 + key + value + headers, padded to 8
        (local.set $rec
          (i32.add (local.get $rec)
            (i32.and
              (i32.add
                (i32.add (i32.add (i32.const 40) (local.get $klen))
                         (i32.add (local.get $vlen) (i32.load offset=32 (local.get $rec))))
                (i32.const 7))
              (i32.const -8))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (if (i32.ne (call $emit (local.get $ptr) (local.get $len)) (i32.const 0))
      (then (return (i32.const 2))))
    (i32.const 0))
)
"#;

/// A job over a poisoned input: a directory holding one hostile plugin
/// (`<name>.wat`, the job's `plugins_dir`), an input topic and an empty
/// output topic.
pub struct PoisonedJob {
    pub dir: tempfile::TempDir,
    pub src: String,
    pub dst: String,
}

/// Writes hostile plugin `name` into a new directory, and `records`
/// records over `partitions` partitions into a new topic: record `i` on
/// partition `i % partitions`, key `k<i>`, value `v<i>`, or `poison` for
/// the indexes in `poisoned`.
pub fn poisoned_job(
    broker: &crate::Broker,
    name: &str,
    records: usize,
    partitions: i32,
    poisoned: &[usize],
) -> anyhow::Result<PoisonedJob> {
    let hostile = ALL
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| anyhow::anyhow!("no hostile plugin {name}"))?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(format!("{name}.wat")), hostile.wat())?;
    let (src, dst) = (
        crate::topic(&format!("{name}-in")),
        crate::topic(&format!("{name}-out")),
    );
    broker.create_topic(&src, partitions)?;
    broker.create_topic(&dst, partitions)?;
    let input: Vec<crate::Input> = (0..records)
        .map(|i| crate::Input {
            partition: i as i32 % partitions,
            key: format!("k{i}"),
            value: if poisoned.contains(&i) {
                "poison".into()
            } else {
                format!("v{i}")
            },
            timestamp: None,
        })
        .collect();
    broker.produce(&src, &input)?;
    Ok(PoisonedJob { dir, src, dst })
}
