//! A partition of a topic: the unit Kafka assigns, Weir runs as one task,
//! and checkpoints state for. Shared vocabulary of `kafka`, `checkpoint`
//! and `pipeline`, so it belongs to none of them.

use std::fmt;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A partition and the next offset to read in it: what a commit records.
pub type Position = (TopicPartition, i64);
