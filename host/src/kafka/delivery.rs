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

/// A delivery opaque: tracker index (high 16 bits) and batch sequence.
pub type Ticket = usize;
/// Opaque of records no tracker follows.
pub const UNTRACKED: Ticket = 0;

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
        ((self.index + 1) << 48) | (*seq as usize & ((1 << 48) - 1))
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
        self.with_batch(ticket, |b| b.outstanding += 1);
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
        if ticket == UNTRACKED {
            return;
        }
        let index = (ticket >> 48) - 1;
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
