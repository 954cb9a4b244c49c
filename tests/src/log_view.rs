//! The read_committed view of a partition, computed from the log itself:
//! the tests' second, independent judge of what a `read_committed`
//! consumer sees (`Broker::read_committed` checks that the two agree).
//!
//! It fetches the raw record batches (read_uncommitted) and applies the
//! rule: a non-transactional batch is visible; the records of a
//! transactional batch from producer P are held until P's next control
//! batch in that partition, kept on COMMIT, dropped on ABORT; records still
//! held at the end belong to an open transaction and are not visible. It
//! also counts aborted records, open ones and markers, which a consumer
//! cannot see.
//!
//! (Until Weir's tests ran on Apache Kafka, this was the only judge: the
//! earlier test broker's read_committed filter let aborted records through.)

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

const FETCH_VERSION: i16 = 4;

/// Reading the log failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {topic}/{partition} from {address}: {reason}")]
pub struct LogReadError {
    pub address: String,
    pub topic: String,
    pub partition: i32,
    pub reason: String,
}

type Result<T> = std::result::Result<T, String>;

fn bad<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A visible record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header names and values, in record order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What the log of one partition holds.
#[derive(Debug, Clone, Default)]
pub struct PartitionLog {
    /// Records a read_committed reader sees, in offset order.
    pub visible: Vec<Visible>,
    /// Records of aborted transactions.
    pub aborted: usize,
    /// Records of transactions still open at the end of the log.
    pub open: usize,
    /// Control batches (COMMIT or ABORT markers).
    pub markers: usize,
}

fn fetch(
    conn: &mut TcpStream,
    topic: &str,
    partition: i32,
    offset: i64,
    corr: i32,
) -> Result<(i64, Option<Bytes>)> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("weir-log-view")));
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_isolation_level(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(4 << 20),
                ]),
        ]);
    let mut body = BytesMut::new();
    header
        .encode(&mut body, FetchRequest::header_version(FETCH_VERSION))
        .map_err(bad)?;
    req.encode(&mut body, FETCH_VERSION).map_err(bad)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    conn.write_all(&frame).map_err(bad)?;
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).map_err(bad)?;
    let len = i32::from_be_bytes(len);
    if !(0..=256 << 20).contains(&len) {
        return Err(format!("implausible response size {len}"));
    }
    let mut buf = vec![0u8; len as usize];
    conn.read_exact(&mut buf).map_err(bad)?;
    let mut resp = Bytes::from(buf);
    let rh = ResponseHeader::decode(&mut resp, FetchResponse::header_version(FETCH_VERSION))
        .map_err(bad)?;
    if rh.correlation_id != corr {
        return Err("correlation id mismatch".into());
    }
    let resp = FetchResponse::decode(&mut resp, FETCH_VERSION).map_err(bad)?;
    let part = resp
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("empty fetch response")?;
    if part.error_code != 0 {
        return Err(format!(
            "fetch at offset {offset}: error code {}",
            part.error_code
        ));
    }
    Ok((part.high_watermark, part.records.clone()))
}

/// Reads the whole partition from `address` (the partition's leader; on a
/// single-node cluster, its bootstrap address) and applies the
/// read_committed rule.
pub fn read_partition(
    address: &str,
    topic: &str,
    partition: i32,
) -> std::result::Result<PartitionLog, LogReadError> {
    read(address, topic, partition).map_err(|reason| LogReadError {
        address: address.to_string(),
        topic: topic.to_string(),
        partition,
        reason,
    })
}

fn read(address: &str, topic: &str, partition: i32) -> Result<PartitionLog> {
    let mut conn = TcpStream::connect(address).map_err(bad)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(bad)?;
    let mut log = PartitionLog::default();
    // Held records per producer id, waiting for that producer's marker.
    let mut held: HashMap<i64, Vec<Visible>> = HashMap::new();
    let mut offset = 0i64;
    let mut corr = 1;
    loop {
        let (high, records) = fetch(&mut conn, topic, partition, offset, corr)?;
        corr += 1;
        let Some(mut records) = records.filter(|r| r.has_remaining()) else {
            if offset >= high {
                break;
            }
            return Err(format!(
                "no records at {offset} below the high watermark {high}"
            ));
        };
        let sets = RecordBatchDecoder::decode_all(&mut records)
            .map_err(|e| format!("decode at {offset}: {e}"))?;
        let before = offset;
        for set in sets {
            let Some(first) = set.records.first() else {
                continue;
            };
            if first.control {
                log.markers += 1;
                // A control record's key: version i16, type i16 (0 abort, 1 commit).
                let key = first.key.clone().ok_or("control record without key")?;
                if key.len() < 4 {
                    return Err("short control record key".into());
                }
                let kind = i16::from_be_bytes([key[2], key[3]]);
                let txn = held.remove(&first.producer_id).unwrap_or_default();
                match kind {
                    1 => log.visible.extend(txn),
                    0 => log.aborted += txn.len(),
                    other => return Err(format!("unknown control type {other}")),
                }
                offset = offset.max(first.offset + 1);
                continue;
            }
            for r in &set.records {
                if r.offset < before {
                    continue; // a batch re-sent from its start
                }
                let v = Visible {
                    offset: r.offset,
                    key: r.key.as_ref().map(|k| k.to_vec()),
                    value: r.value.as_ref().map(|v| v.to_vec()),
                    headers: r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec())))
                        .collect(),
                };
                if r.transactional {
                    held.entry(r.producer_id).or_default().push(v);
                } else {
                    log.visible.push(v);
                }
                offset = offset.max(r.offset + 1);
            }
        }
        if offset == before {
            return Err(format!("no progress at offset {offset}"));
        }
        if offset >= high {
            break;
        }
    }
    log.open = held.values().map(Vec::len).sum();
    log.visible.sort_by_key(|v| v.offset);
    Ok(log)
}
