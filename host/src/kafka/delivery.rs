//! Offsets that may be committed: only those whose records are processed
//! and whose outputs are delivered (as rust-rdkafka's at-least-once
//! example does, at batch granularity).
//!
//! With checkpoints off, a partition task registers every batch with its
//! tracker; each output record carries the batch's ticket as its delivery
//! opaque. When the broker acknowledges the last output of the oldest open
//! batches, the tracker stores the offset after them in the consumer
//! (`store_offset`), and librdkafka's auto-commit (`enable.auto.commit`,
//! `auto.commit.interval.ms`) commits only stored offsets. A failed
//! delivery stops the partition's offset where it is.

use super::consumer::SourceConsumer;
use rdkafka::consumer::Consumer;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A delivery opaque: tracker index + 1 (bits 48..62) and batch sequence
/// (bits 0..48). The two top bits of a record's opaque belong to the
/// producer's flush accounting (`producer::InFlight`).
pub type Ticket = usize;
/// Opaque of records no tracker follows.
pub const UNTRACKED: Ticket = 0;
/// The bits of an opaque that hold the ticket.
pub const TICKET_MASK: usize = (1 << 62) - 1;
/// Trackers one producer can route delivery reports to.
const MAX_TRACKERS: usize = (1 << 14) - 1;
const _: () = assert!(usize::BITS == 64, "tickets need a 64-bit usize");

#[derive(Debug)]
struct Batch {
    seq: u64,
    next_offset: i64,
    outstanding: u64,
    /// All the batch's outputs were handed to the producer.
    sealed: bool,
    failed: bool,
}

/// One partition's open batches.
pub struct DeliveryTracker {
    index: usize,
    topic: String,
    partition: i32,
    consumer: Arc<SourceConsumer>,
    batches: Mutex<VecDeque<Batch>>,
    next_seq: Mutex<u64>,
}

impl DeliveryTracker {
    /// The ticket for the next batch's outputs; call [`seal`](Self::seal)
    /// once they are all sent.
    pub fn open(&self, next_offset: i64) -> Ticket {
        let mut seq = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Batch {
                seq: *seq,
                next_offset,
                outstanding: 0,
                sealed: false,
                failed: false,
            });
        let routed = if self.index < MAX_TRACKERS {
            (self.index + 1) << 48
        } else {
            // Beyond what a ticket can name: reports cannot be routed, so
            // this partition's offsets are never stored (never ahead of
            // its output; see `Trackers::register`).
            0
        };
        routed | (*seq as usize & ((1 << 48) - 1))
    }

    /// Forgets open batches (after the task restarts from an earlier
    /// offset): their offsets will be read again.
    pub fn reset(&self) {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b| b.sealed && !b.failed);
        self.advance();
    }

    /// One more output of `ticket`'s batch was sent.
    pub fn sent(&self, ticket: Ticket) {
        self.sent_many(ticket, 1);
    }

    /// `n` more outputs of `ticket`'s batch are about to be sent: one lock
    /// for a whole emitted batch, not one per record. Count them before
    /// sending (a delivery report must not find its batch short); if a send
    /// then fails, the batch is never sealed and its offsets are not stored.
    pub fn sent_many(&self, ticket: Ticket, n: u64) {
        if n > 0 {
            self.with_batch(ticket, |b| b.outstanding += n);
        }
    }

    /// Every output of `ticket`'s batch was sent.
    pub fn seal(&self, ticket: Ticket) {
        self.with_batch(ticket, |b| b.sealed = true);
        self.advance();
    }

    fn acked(&self, ticket: Ticket, ok: bool) {
        self.with_batch(ticket, |b| {
            b.outstanding = b.outstanding.saturating_sub(1);
            b.failed |= !ok;
        });
        self.advance();
    }

    fn with_batch(&self, ticket: Ticket, f: impl FnOnce(&mut Batch)) {
        let seq = (ticket & ((1 << 48) - 1)) as u64;
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = batches
            .iter_mut()
            .find(|b| b.seq as usize & ((1 << 48) - 1) == seq as usize)
        {
            f(b);
        }
    }

    /// Pops the completed prefix and stores the offset after it.
    fn advance(&self) {
        let mut store = None;
        {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(front) = batches.front() {
                if front.failed || !front.sealed || front.outstanding > 0 {
                    break;
                }
                store = Some(front.next_offset);
                batches.pop_front();
            }
        }
        // librdkafka's `rd_kafka_offset_store` stores `offset + 1`: give it
        // the last delivered record's offset.
        if let Some(offset) = store
            && let Err(e) = self
                .consumer
                .store_offset(&self.topic, self.partition, offset - 1)
        {
            tracing::warn!(topic = %self.topic, partition = self.partition, offset, error = %e, "store_offset failed");
        }
    }
}

/// All trackers of a producer, found by ticket in the delivery callback.
#[derive(Default)]
pub struct Trackers {
    list: Mutex<Vec<Arc<DeliveryTracker>>>,
}

impl Trackers {
    /// Registers a partition's tracker.
    pub fn register(
        &self,
        topic: &str,
        partition: i32,
        consumer: Arc<SourceConsumer>,
    ) -> Arc<DeliveryTracker> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() >= MAX_TRACKERS {
            tracing::warn!(
                topic,
                partition,
                "more than {MAX_TRACKERS} partitions in one process: this partition's offsets will not be auto-committed"
            );
        }
        let t = Arc::new(DeliveryTracker {
            index: list.len(),
            topic: topic.to_string(),
            partition,
            consumer,
            batches: Mutex::new(VecDeque::new()),
            next_seq: Mutex::new(0),
        });
        list.push(t.clone());
        t
    }

    /// Routes a delivery report.
    pub fn delivered(&self, ticket: Ticket, ok: bool) {
        let routed = (ticket & TICKET_MASK) >> 48;
        if routed == 0 {
            return;
        }
        let index = routed - 1;
        let tracker = self
            .list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned();
        if let Some(t) = tracker {
            t.acked(ticket, ok);
        }
    }
}
