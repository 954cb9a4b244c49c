//! Incremental checkpoints through the real runtime and the real store:
//! random writes (scattered bytes, runs across pages, memory growth) by a
//! plugin, a checkpoint after every batch, and the state loaded back from
//! the store (full snapshot + chain of deltas) compared byte for byte with
//! the live instance, across deltas, compactions, failed checkpoints and a
//! restart. Also: a corrupt link in a chain makes the checkpoint unusable
//! and the previous one is used; the exactly-once state files chain and
//! prune the same way. No broker needed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use weir::checkpoint::CheckpointStore;
use weir::checkpoint::transactional::PartitionStateDir;
use weir::runtime::dirty_pages::DirtyTracker;
use weir::runtime::snapshot::Snapshot;
use weir::runtime::snapshot_delta::CapturedState;
use weir::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir::topic_partition::TopicPartition;
use weir_plugin_sdk::abi::RecordIter;

fn t0() -> TopicPartition {
    TopicPartition::new("t", 0)
}

/// A plugin that applies the operations it is given, 12 bytes each
/// `(op u32, a u32, b u32)`: op 0 stores byte `b` at address `a`, op 1
/// grows memory by `a` pages, op 2 fills `b >> 8` bytes from `a` with byte
/// `b & 255`; every op also adds `b` to a hidden i64 global. The data segment makes wasmtime map a copy-on-write image.
const POKE_WAT: &str = r#"
(module
  (memory (export "memory") 2)
  (global $sum (mut i64) (i64.const 0))
  (global $ops (mut i32) (i32.const 0))
  (data (i32.const 70000) "initial image bytes")
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const 8))
  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (local $at i32) (local $end i32) (local $op i32) (local $a i32) (local $b i32)
    (local.set $at (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $op (i32.load (local.get $at)))
        (local.set $a (i32.load offset=4 (local.get $at)))
        (local.set $b (i32.load offset=8 (local.get $at)))
        (if (i32.eqz (local.get $op))
          (then (i32.store8 (local.get $a) (local.get $b)))
          (else
            (if (i32.eq (local.get $op) (i32.const 1))
              (then (drop (memory.grow (local.get $a))))
              (else
                (memory.fill (local.get $a)
                  (i32.and (local.get $b) (i32.const 255))
                  (i32.shr_u (local.get $b) (i32.const 8)))))))
        (global.set $sum (i64.add (global.get $sum) (i64.extend_i32_u (local.get $b))))
        (global.set $ops (i32.add (global.get $ops) (i32.const 1)))
        (local.set $at (i32.add (local.get $at) (i32.const 12)))
        (br $next)))
    (i32.const 0)))
"#;

const PAGE: usize = 65536;
/// Addresses the test writes start above page 0, where the input lives.
const FIRST: usize = PAGE;

struct Discard;

impl OutputSink for Discard {
    fn emit(&mut self, _: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        Ok(())
    }
}

fn module(dir: &Path) -> PluginModule {
    let path = dir.join("poke.wat");
    std::fs::write(&path, POKE_WAT).unwrap();
    PluginModule::load(&PluginEngine::new().unwrap(), &path).unwrap()
}

fn instance(m: &PluginModule) -> PluginInstance {
    PluginInstance::new(m, Box::new(Discard), vec!["out".into()].into()).unwrap()
}

/// Runs `ops` in one plugin call.
fn run(inst: &mut PluginInstance, ops: &[(u32, u32, u32)]) {
    if ops.is_empty() {
        return;
    }
    inst.process(ops.len() * 12, |buf| {
        for (i, (op, a, b)) in ops.iter().enumerate() {
            buf[i * 12..i * 12 + 4].copy_from_slice(&op.to_le_bytes());
            buf[i * 12 + 4..i * 12 + 8].copy_from_slice(&a.to_le_bytes());
            buf[i * 12 + 8..i * 12 + 12].copy_from_slice(&b.to_le_bytes());
        }
        ops.len() * 12
    })
    .unwrap();
}

/// A random batch: scattered bytes, runs across page boundaries, now and
/// then a growth of 1..=3 pages (up to 40 pages in all).
fn random_ops(rng: &mut StdRng, memory: usize) -> Vec<(u32, u32, u32)> {
    let mut ops = Vec::new();
    match rng.random_range(0..10) {
        // Nothing changes: an empty delta.
        0 => {}
        1 if memory < 40 * PAGE => ops.push((1, rng.random_range(1..=3), 0)),
        _ => {
            for _ in 0..rng.random_range(1..200) {
                let at = rng.random_range(FIRST..memory);
                if rng.random_bool(0.1) {
                    // A run of up to 3 pages.
                    let len = rng.random_range(1..3 * 4096).min(memory - at);
                    let b = rng.random::<u8>() as u32;
                    ops.push((2, at as u32, (len as u32) << 8 | b));
                } else {
                    ops.push((0, at as u32, rng.random::<u8>() as u32));
                }
            }
        }
    }
    ops
}

fn assert_same(what: &str, restored: &Snapshot, live: &Snapshot) {
    assert_eq!(restored.globals, live.globals, "{what}: globals differ");
    assert_eq!(
        restored.memory.len(),
        live.memory.len(),
        "{what}: memory sizes differ"
    );
    if let Some(at) = (0..live.memory.len()).find(|&i| restored.memory[i] != live.memory[i]) {
        panic!(
            "{what}: first differing byte at {at}: restored {} live {}",
            restored.memory[at], live.memory[at]
        );
    }
}

fn files_in(store: &CheckpointStore, ext: &str) -> usize {
    walk(store.dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn random_writes_restore_byte_for_byte_across_deltas_compaction_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let m = module(tmp.path());
    let tracking = DirtyTracker::new().is_active();
    let store = CheckpointStore::open(&tmp.path().join("ck"), 2)
        .unwrap()
        .with_full_snapshot_every(4);
    let mut rng = StdRng::seed_from_u64(0x5eed_0006);
    let mut live = instance(&m);
    let mut deltas_captured = 0;
    let mut id = 0u64;
    let mut offset = 0i64;
    for round in 0..40 {
        let ops = random_ops(&mut rng, live.memory_size());
        run(&mut live, &ops);
        offset += 1;
        let capture = live.capture(false);
        if matches!(capture.state, CapturedState::Delta(_)) {
            deltas_captured += 1;
        }
        store.absorb([(t0(), capture)]).unwrap();
        if round % 7 == 3 {
            // This checkpoint fails before its files are written (say the
            // producer flush failed): the next one must cover its pages.
            continue;
        }
        id += 1;
        store.write_mirrored(id, &[(t0(), offset)]).unwrap();
        let truth = live.snapshot();
        let loaded = store.load(id).unwrap();
        let part = loaded.partition(&t0()).unwrap();
        let (o, snap) = (part.offset, &part.state);
        assert_eq!(o, offset);
        assert_same(&format!("checkpoint {id} from the store"), snap, &truth);
        // And through a fresh instance, as a restart restores it.
        let mut fresh = instance(&m);
        fresh.restore(snap, false).unwrap();
        assert_same(
            &format!("checkpoint {id} restored"),
            &fresh.snapshot(),
            &truth,
        );
        if round == 20 {
            // The process restarts: the newest checkpoint is restored into
            // a new instance, which goes on from there (its first capture
            // is full, in a new lineage).
            let latest = store.latest().unwrap().unwrap();
            assert_eq!(latest.id, id);
            let mut next = instance(&m);
            next.restore(&latest.partition(&t0()).unwrap().state, false)
                .unwrap();
            live = next;
        }
    }
    // Every retained checkpoint still loads: retention kept their bases.
    let ids: Vec<u64> = (1..=id).filter(|i| store.load(*i).is_ok()).collect();
    assert!(ids.contains(&id) && ids.contains(&(id - 1)), "{ids:?}");
    if tracking {
        assert!(deltas_captured > 20, "{deltas_captured} deltas captured");
        assert!(files_in(&store, "delta") > 0, "no delta was written");
    }
    assert!(files_in(&store, "snap") > 0);
}

/// Writes checkpoints 1 (full), 2 and 3 (deltas) of one partition and
/// returns the live state at each.
fn three_checkpoints(store: &CheckpointStore, m: &PluginModule) -> Vec<Snapshot> {
    let mut live = instance(m);
    let mut states = Vec::new();
    for id in 1..=3u64 {
        run(
            &mut live,
            &[(0, (FIRST + id as usize * 5000) as u32, id as u32)],
        );
        store.absorb([(t0(), live.capture(false))]).unwrap();
        store.write_mirrored(id, &[(t0(), id as i64 * 10)]).unwrap();
        states.push(live.snapshot());
    }
    states
}

#[test]
fn a_corrupt_link_makes_the_checkpoint_unusable_and_the_previous_one_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let m = module(tmp.path());
    if !DirtyTracker::new().is_active() {
        // Without tracking every capture is full: no chain to break.
        return;
    }
    let chk = |id: u64, file: &str| tmp.path().join(format!("ck/chk-{id:010}/{file}"));
    let flip = |path: &Path, at: usize| {
        let mut b = std::fs::read(path).unwrap();
        b[at] ^= 0x20;
        std::fs::write(path, b).unwrap();
    };

    // A flipped byte in the newest delta: checkpoint 2 is used.
    let store = CheckpointStore::open(&tmp.path().join("ck"), 10).unwrap();
    let states = three_checkpoints(&store, &m);
    assert!(chk(3, "t-0.delta").exists() && chk(2, "t-0.delta").exists());
    assert!(chk(1, "t-0.snap").exists());
    flip(&chk(3, "t-0.delta"), 60);
    let c = store.latest().unwrap().unwrap();
    assert_eq!(c.id, 2);
    assert_same(
        "fallback to 2",
        &c.partition(&t0()).unwrap().state,
        &states[1],
    );

    // A flipped byte in the middle delta breaks 3 and 2: 1 is used.
    flip(&chk(2, "t-0.delta"), 60);
    let c = store.latest().unwrap().unwrap();
    assert_eq!(c.id, 1);
    assert_same(
        "fallback to 1",
        &c.partition(&t0()).unwrap().state,
        &states[0],
    );

    // A base replaced by another valid snapshot: the link's CRC no longer
    // matches, so the delta above it is refused although every file is
    // intact on its own.
    std::fs::remove_dir_all(tmp.path().join("ck")).unwrap();
    let store = CheckpointStore::open(&tmp.path().join("ck"), 10).unwrap();
    let states = three_checkpoints(&store, &m);
    let mut other = states[0].clone();
    other.memory[FIRST] ^= 1;
    let mut bytes = Vec::new();
    other.encode(&mut bytes);
    std::fs::write(chk(2, "t-0.delta"), &bytes).unwrap();
    let meta = std::fs::read_to_string(chk(2, "_metadata.json")).unwrap();
    assert!(store.load(2).is_err());
    assert!(meta.contains("\"base\": 1"), "{meta}");
    assert!(store.load(3).is_err(), "3 links to the replaced file");
    assert_eq!(store.latest().unwrap().unwrap().id, 1);
}

#[test]
fn exactly_once_state_files_chain_compact_and_prune_what_no_chain_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = module(tmp.path());
    let mut dir = PartitionStateDir::open(
        &weir::checkpoint::folder::StoreLocation::Local(tmp.path().into()),
        "t",
        0,
    )
    .unwrap()
    .with_full_snapshot_every(3);
    let mut rng = StdRng::seed_from_u64(7);
    let mut live = instance(&m);
    let mut buf = Vec::new();
    let mut states = Vec::new();
    for i in 1..=8i64 {
        let ops = random_ops(&mut rng, live.memory_size());
        run(&mut live, &ops);
        let full = dir.wants_full(live.capture_position(), live.memory_size());
        let capture = live.capture(full);
        dir.write(i * 100, &capture, &mut buf).unwrap();
        states.push(live.snapshot());
        let loaded = dir.load(i * 100).unwrap().unwrap();
        assert_same(
            &format!("offset {}", i * 100),
            &loaded,
            states.last().unwrap(),
        );
        // The transaction for i * 100 commits: older files go, except the
        // chain of the committed one.
        dir.prune_below(i * 100).unwrap();
        assert!(dir.load(i * 100).unwrap().is_some());
    }
    // What is left is exactly the committed state's chain: a full file,
    // then deltas, each linking to the one before.
    let offsets = dir.offsets().unwrap();
    assert_eq!(offsets.last(), Some(&800));
    let file = |o: i64| tmp.path().join("eos/t-0").join(format!("{o:020}.snap"));
    let magic = |o: i64| std::fs::read(file(o)).unwrap()[..8].to_vec();
    assert_eq!(magic(offsets[0]), b"WEIRSNP2", "{offsets:?}");
    for &o in &offsets[1..] {
        assert_eq!(magic(o), b"WEIRDLT2", "{offsets:?}");
    }
    if DirtyTracker::new().is_active() {
        assert!(
            offsets.len() > 1,
            "8 files with a full one every 3: {offsets:?}"
        );
        // A corrupt base makes the committed state unusable (under
        // exactly-once there is nothing older to fall back to).
        let mut b = std::fs::read(file(offsets[0])).unwrap();
        b[100] ^= 1;
        std::fs::write(file(offsets[0]), b).unwrap();
        assert!(dir.load(800).is_err());
    }
}
