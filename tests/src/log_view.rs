//! The read_committed view the tests judge output with: Weir's own log
//! reader (`weir::kafka::log_reader`), which applies the read_committed
//! rule to raw record batches because Tansu's read_committed filter lets
//! aborted records through (shared/BROKER.md).

pub use weir::kafka::log_reader::{PartitionLog, Visible};

/// Reads one partition of a single-broker cluster at `bootstrap`.
pub fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<PartitionLog> {
    Ok(weir::kafka::log_reader::read_partition(
        bootstrap, topic, partition,
    )?)
}
