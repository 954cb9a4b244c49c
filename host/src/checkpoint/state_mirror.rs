//! The checkpoint writer's copy of every partition's state, so that a
//! checkpoint can hold a delta against what the store already has, and a
//! full snapshot (compaction) costs the partition task nothing.
//!
//! Partition tasks hand over [`Capture`]s: their whole state the first
//! time, then only the pages written since their previous capture. The
//! mirror applies each capture to its copy (off the processing path, in
//! the thread that writes the checkpoint) and remembers which pages
//! changed since the partition's last *written* state. What it writes is
//! then a delta against that written state, whatever happened in between
//! (a checkpoint that failed before its files were written, the final
//! state offered to several checkpoints): the link always points at a
//! complete checkpoint.
//!
//! Compaction: a full snapshot is written instead of a delta when the
//! chain already has `full_snapshot_every - 1` deltas, or when the chain's
//! delta bytes would exceed the memory size (a restore would read more
//! than a full snapshot).
//!
//! The price is memory: one copy of each partition's plugin memory lives
//! here (the old design held one per checkpoint while writing it).

use crate::runtime::dirty_pages::OS_PAGE;
use crate::runtime::snapshot::Snapshot;
use crate::runtime::snapshot_delta::{Capture, CapturedState, DeltaLink, SnapshotDelta};
use crate::topic_partition::TopicPartition;
use std::collections::HashMap;
use std::ops::Range;

/// A capture that does not follow the mirror's previous one.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{tp}: a delta of capture {seq} (instance {instance}) does not follow the last capture the checkpoint writer has ({have})"
)]
pub struct LineageError {
    pub tp: TopicPartition,
    pub instance: u64,
    pub seq: u64,
    /// What the mirror holds, for the message.
    pub have: String,
}

/// What to write for one partition.
#[derive(Debug)]
pub enum Planned<'a> {
    /// The whole state.
    Full(&'a Snapshot),
    /// The pages changed since the written state `link` names.
    Delta(DeltaLink, SnapshotDelta),
}

/// The partition's state as the store has it.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// Checkpoint id.
    id: u64,
    /// Trailing CRC32 of the file, for the next delta's link.
    crc: u32,
    /// Deltas since the last full snapshot, this one included.
    chain_len: u32,
    /// Their encoded bytes.
    chain_bytes: u64,
}

#[derive(Debug)]
struct Mirror {
    /// Lineage and number of the last capture applied.
    instance: u64,
    seq: u64,
    /// The state at that capture.
    state: Snapshot,
    /// One bit per OS page: changed since `written`.
    dirty: Vec<u64>,
    /// The last state of this partition in a complete checkpoint.
    written: Option<Written>,
}

impl Mirror {
    fn mark(&mut self, range: Range<usize>) {
        let pages = self.state.memory.len().div_ceil(OS_PAGE);
        self.dirty.resize(pages.div_ceil(64), 0);
        for p in range.start / OS_PAGE..range.end.div_ceil(OS_PAGE) {
            self.dirty[p / 64] |= 1 << (p % 64);
        }
    }

    /// The dirty pages as merged byte ranges.
    fn dirty_ranges(&self) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        for (w, &bits) in self.dirty.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                let i = b.trailing_zeros() as usize;
                b &= b - 1;
                let start = (w * 64 + i) * OS_PAGE;
                match out.last_mut() {
                    Some(last) if last.end == start => last.end += OS_PAGE,
                    _ => out.push(start..start + OS_PAGE),
                }
            }
        }
        out
    }
}

/// Every partition's mirrored state.
#[derive(Debug)]
pub struct StateMirrors {
    parts: HashMap<TopicPartition, Mirror>,
    /// See [`CheckpointConfig::full_snapshot_every`](crate::config::CheckpointConfig).
    full_every: u32,
}

impl StateMirrors {
    /// Mirrors that write a full snapshot at least every `full_every`
    /// checkpoints of a partition (1: always full).
    pub fn new(full_every: u32) -> Self {
        StateMirrors {
            parts: HashMap::new(),
            full_every: full_every.max(1),
        }
    }

    /// Applies a partition's capture. A delta must follow the capture
    /// applied last (the same one again is ignored: a finished task's final
    /// state is offered to every later checkpoint).
    pub fn apply(&mut self, tp: &TopicPartition, capture: Capture) -> Result<(), LineageError> {
        if let Some(m) = self.parts.get(tp)
            && (m.instance, m.seq) == (capture.instance, capture.seq)
        {
            return Ok(());
        }
        match capture.state {
            CapturedState::Full(state) => {
                // A new lineage (a fresh or restored instance) may even
                // have less memory than the written state: nothing links
                // to the old chain any more, the next write is full.
                let mut m = Mirror {
                    instance: capture.instance,
                    seq: capture.seq,
                    state,
                    dirty: Vec::new(),
                    written: None,
                };
                m.mark(0..m.state.memory.len());
                self.parts.insert(tp.clone(), m);
            }
            CapturedState::Delta(delta) => {
                let m = match self.parts.get_mut(tp) {
                    Some(m) if m.instance == capture.instance && m.seq + 1 == capture.seq => m,
                    other => {
                        return Err(LineageError {
                            tp: tp.clone(),
                            instance: capture.instance,
                            seq: capture.seq,
                            have: other.map_or("nothing".into(), |m| {
                                format!("capture {} of instance {}", m.seq, m.instance)
                            }),
                        });
                    }
                };
                let old_len = m.state.memory.len();
                if let Err(e) = m.state.apply_delta(&delta) {
                    // A capture of the same instance cannot mismatch its
                    // own earlier state; forget the mirror all the same.
                    self.parts.remove(tp);
                    return Err(LineageError {
                        tp: tp.clone(),
                        instance: capture.instance,
                        seq: capture.seq,
                        have: e.to_string(),
                    });
                }
                for (range, _) in delta.pages() {
                    m.mark(range);
                }
                let new_len = m.state.memory.len();
                if new_len > old_len {
                    m.mark(old_len..new_len);
                }
                m.seq = capture.seq;
            }
        }
        Ok(())
    }

    /// What to write for a partition now: a delta against its last
    /// written state, or the full state (first write, compaction).
    pub fn plan(&self, tp: &TopicPartition) -> Option<Planned<'_>> {
        let m = self.parts.get(tp)?;
        let Some(w) = m.written else {
            return Some(Planned::Full(&m.state));
        };
        if w.chain_len + 1 >= self.full_every {
            return Some(Planned::Full(&m.state));
        }
        let ranges = m.dirty_ranges();
        let bytes: usize = ranges.iter().map(|r| r.len()).sum();
        if w.chain_bytes + bytes as u64 > m.state.memory.len() as u64 {
            return Some(Planned::Full(&m.state));
        }
        let delta = SnapshotDelta::copy_from(
            m.state.module_sha256,
            (m.state.globals.clone(), m.state.time),
            &m.state.memory,
            &ranges,
        );
        Some(Planned::Delta(
            DeltaLink {
                base: w.id,
                base_crc: w.crc,
            },
            delta,
        ))
    }

    /// Records that checkpoint `id` is complete with this partition's file
    /// (`crc`, `size`, full or not): later deltas link to it.
    pub fn written(&mut self, tp: &TopicPartition, id: u64, crc: u32, size: u64, full: bool) {
        let Some(m) = self.parts.get_mut(tp) else {
            return;
        };
        m.written = Some(match (full, m.written) {
            (false, Some(w)) => Written {
                id,
                crc,
                chain_len: w.chain_len + 1,
                chain_bytes: w.chain_bytes + size,
            },
            _ => Written {
                id,
                crc,
                chain_len: 0,
                chain_bytes: 0,
            },
        });
        m.dirty.iter_mut().for_each(|w| *w = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::snapshot::{GlobalValue, HostTime, PAGE};

    fn t0() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    fn full(instance: u64, seq: u64, fill: u8) -> Capture {
        Capture {
            instance,
            seq,
            state: CapturedState::Full(Snapshot {
                module_sha256: [0; 32],
                globals: vec![GlobalValue::I64(seq as i64)],
                time: HostTime::default(),
                memory: vec![fill; PAGE],
            }),
        }
    }

    fn delta(instance: u64, seq: u64, memory: &[u8], ranges: &[Range<usize>]) -> Capture {
        Capture {
            instance,
            seq,
            state: CapturedState::Delta(SnapshotDelta::copy_from(
                [0; 32],
                (vec![GlobalValue::I64(seq as i64)], HostTime::default()),
                memory,
                ranges,
            )),
        }
    }

    #[test]
    fn deltas_link_to_the_last_written_state_and_compact() {
        let mut m = StateMirrors::new(3);
        m.apply(&t0(), full(1, 1, 0)).unwrap();
        assert!(matches!(m.plan(&t0()), Some(Planned::Full(_))));
        m.written(&t0(), 10, 0xaaaa, 100, true);
        let mut mem = vec![0u8; PAGE];
        mem[OS_PAGE] = 1;
        m.apply(
            &t0(),
            delta(1, 2, &mem, std::slice::from_ref(&(OS_PAGE..2 * OS_PAGE))),
        )
        .unwrap();
        // Checkpoint 11 is not written (say its flush failed); 12 carries
        // the pages of both captures against 10.
        mem[5 * OS_PAGE] = 2;
        m.apply(
            &t0(),
            delta(
                1,
                3,
                &mem,
                std::slice::from_ref(&(5 * OS_PAGE..6 * OS_PAGE)),
            ),
        )
        .unwrap();
        match m.plan(&t0()) {
            Some(Planned::Delta(link, d)) => {
                assert_eq!(
                    link,
                    DeltaLink {
                        base: 10,
                        base_crc: 0xaaaa
                    }
                );
                let runs: Vec<_> = d.pages().map(|(r, _)| r).collect();
                assert_eq!(runs, vec![OS_PAGE..2 * OS_PAGE, 5 * OS_PAGE..6 * OS_PAGE]);
                let mut restored = Snapshot {
                    module_sha256: [0; 32],
                    globals: vec![GlobalValue::I64(1)],
                    time: HostTime::default(),
                    memory: vec![0; PAGE],
                };
                restored.apply_delta(&d).unwrap();
                assert_eq!(restored.memory, mem);
                assert_eq!(restored.globals, vec![GlobalValue::I64(3)]);
            }
            other => panic!("{other:?}"),
        }
        m.written(&t0(), 12, 0xbbbb, 50, false);
        m.apply(&t0(), delta(1, 4, &mem, &[])).unwrap();
        assert!(matches!(m.plan(&t0()), Some(Planned::Delta(l, _)) if l.base == 12));
        m.written(&t0(), 13, 0xcccc, 50, false);
        // Two deltas in the chain with full_every = 3: the next is full.
        m.apply(&t0(), delta(1, 5, &mem, &[])).unwrap();
        assert!(matches!(m.plan(&t0()), Some(Planned::Full(_))));
    }

    #[test]
    fn a_delta_out_of_lineage_is_refused_and_a_repeat_ignored() {
        let mut m = StateMirrors::new(10);
        let mem = vec![0u8; PAGE];
        assert!(m.apply(&t0(), delta(1, 2, &mem, &[])).is_err());
        m.apply(&t0(), full(1, 1, 0)).unwrap();
        m.apply(&t0(), delta(1, 2, &mem, &[])).unwrap();
        m.apply(&t0(), delta(1, 2, &mem, &[])).unwrap();
        assert!(m.apply(&t0(), delta(1, 4, &mem, &[])).is_err());
        assert!(m.apply(&t0(), delta(2, 3, &mem, &[])).is_err());
        // A new lineage starts with a full capture; it is written in full.
        m.written(&t0(), 1, 1, 1, true);
        m.apply(&t0(), full(2, 1, 7)).unwrap();
        assert!(matches!(m.plan(&t0()), Some(Planned::Full(s)) if s.memory[0] == 7));
    }
}
