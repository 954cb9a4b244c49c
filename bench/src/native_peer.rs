//! `weir-native-peer`: the floor of the peer benchmark. The same job as
//! every peer runs (identity or running count per key, at-least-once or
//! exactly-once, 1 s commits, `parallelism` threads) written straight on
//! librdkafka, with no plugin, no state snapshot and no checkpoint store.
//! What Weir costs above it is the host; what it costs at all is Kafka's
//! clients.
//!
//! Shape: one consumer whose partitions are split into their own queues,
//! dealt round-robin to the threads; each thread has its own producer (a
//! transactional one under exactly-once, as Weir's workers do) and its own
//! counts. Every second a thread commits. At-least-once notes its consumed
//! positions at the tick and commits them (asynchronously, without
//! stopping) once its producer has acknowledged every record sent before
//! the tick (records carry the number of their second): the consumer never
//! waits for the producer. Exactly-once sends its positions into its
//! transaction and commits that. It runs until killed.

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Job {
    Identity,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Parser)]
#[command(
    name = "weir-native-peer",
    about = "The peer benchmark's floor: its job on librdkafka alone, until killed"
)]
struct Cli {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: String,
    #[arg(long, value_enum)]
    job: Job,
    #[arg(long, value_enum)]
    guarantee: Guarantee,
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// Consumer group (offsets are committed to it).
    #[arg(long)]
    group: String,
}

const COMMIT_EVERY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let cli = Cli::parse();
    // In an `Arc`: `split_partition_queue` takes one.
    let consumer: Arc<BaseConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &cli.bootstrap)
            .set("group.id", &cli.group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .create()?,
    );
    let partitions = consumer
        .fetch_metadata(Some(&cli.input), TIMEOUT)?
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .filter(|&n| n > 0)
        .with_context(|| format!("topic {} has no partitions", cli.input))?;
    let threads = cli.parallelism.max(1);
    let mut queues: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let q = consumer
            .split_partition_queue(&cli.input, p)
            .with_context(|| format!("split the queue of {}/{p}", cli.input))?;
        queues[p as usize % threads].push((p, q));
        tpl.add_partition_offset(&cli.input, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let cli = &cli;
    std::thread::scope(|scope| -> Result<()> {
        for (t, mine) in queues.into_iter().enumerate() {
            let consumer = &consumer;
            scope.spawn(move || {
                if let Err(e) = worker(cli, t, consumer, &mine) {
                    eprintln!("weir-native-peer: thread {t}: {e:#}");
                    std::process::exit(1);
                }
            });
        }
        // The consumer's own queue carries its events; serve it.
        loop {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                eprintln!("weir-native-peer: consumer: {e}");
            }
        }
    })
}

/// Seconds whose deliveries may be outstanding at once.
const EPOCHS: usize = 64;

/// Counts a producer's acknowledged deliveries per second they were sent
/// in (modulo [`EPOCHS`]), and its failed ones.
struct Acks {
    delivered: [AtomicU64; EPOCHS],
    failed: AtomicU64,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, epoch: usize) {
        let n = if r.is_ok() {
            &self.delivered[epoch % EPOCHS]
        } else {
            &self.failed
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

type Queue =
    rdkafka::consumer::base_consumer::PartitionQueue<rdkafka::consumer::DefaultConsumerContext>;

/// One thread: drain its queues without waiting while records are there,
/// map each record, hand it to its producer; commit every second.
fn worker(cli: &Cli, t: usize, consumer: &BaseConsumer, mine: &[(i32, Queue)]) -> Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &cli.bootstrap);
    let eos = cli.guarantee == Guarantee::ExactlyOnce;
    if eos {
        config.set("transactional.id", format!("{}-native-{t}", cli.output));
    }
    let producer: ThreadedProducer<Acks> = config.create_with_context(Acks {
        delivered: std::array::from_fn(|_| AtomicU64::new(0)),
        failed: AtomicU64::new(0),
    })?;
    if eos {
        producer.init_transactions(TIMEOUT)?;
        producer.begin_transaction()?;
    }
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut next: Vec<Option<i64>> = vec![None; mine.len()];
    let mut digits = Vec::with_capacity(20);
    let mut due = Instant::now() + COMMIT_EVERY;
    // At-least-once: per second not yet committed, its number, the records
    // sent in it and the positions at its end.
    let mut noted: VecDeque<(usize, u64, TopicPartitionList)> = VecDeque::new();
    let (mut epoch, mut sent) = (0usize, 0u64);
    loop {
        let mut idle = true;
        for (i, (_, q)) in mine.iter().enumerate() {
            let mut wait = if idle && i == 0 {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            };
            while let Some(m) = q.poll(wait) {
                let m = m?;
                wait = Duration::ZERO;
                idle = false;
                next[i] = Some(m.offset() + 1);
                let key = m.key().unwrap_or_default();
                let value = match cli.job {
                    Job::Identity => m.payload().unwrap_or_default(),
                    Job::Count => {
                        let n = match counts.get_mut(key) {
                            Some(n) => n,
                            None => counts.entry(key.to_vec()).or_default(),
                        };
                        *n += 1;
                        digits.clear();
                        write!(digits, "{n}")?;
                        &digits[..]
                    }
                };
                let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&cli.output, epoch)
                    .key(key)
                    .payload(value);
                while let Err((e, back)) = producer.send(rec) {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        bail!("send: {e}");
                    }
                    rec = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                sent += 1;
            }
        }
        let acks = producer.context();
        if acks.failed.load(Ordering::Relaxed) > 0 {
            bail!("a delivery failed");
        }
        while let Some((e, n, _)) = noted.front() {
            let delivered = &acks.delivered[e % EPOCHS];
            if delivered.load(Ordering::Relaxed) < *n {
                break;
            }
            delivered.store(0, Ordering::Relaxed);
            let (_, _, tpl) = noted.pop_front().expect("front");
            if tpl.count() > 0 {
                consumer.commit(&tpl, CommitMode::Async)?;
            }
        }
        if Instant::now() >= due {
            let tpl = positions(cli, mine, &next)?;
            match cli.guarantee {
                Guarantee::AtLeastOnce => {
                    if noted.len() == EPOCHS - 1 {
                        bail!("deliveries outstanding for {EPOCHS} seconds");
                    }
                    noted.push_back((epoch, sent, tpl));
                    (epoch, sent) = (epoch + 1, 0);
                }
                Guarantee::ExactlyOnce => commit_transaction(consumer, &producer, &tpl)?,
            }
            due = Instant::now() + COMMIT_EVERY;
        }
    }
}

/// This thread's next offsets to consume.
fn positions(cli: &Cli, mine: &[(i32, Queue)], next: &[Option<i64>]) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((p, _), n) in mine.iter().zip(next) {
        if let Some(n) = n {
            tpl.add_partition_offset(&cli.input, *p, Offset::Offset(*n))?;
        }
    }
    Ok(tpl)
}

/// Commits the transaction with the positions `tpl` in it, begins the next.
fn commit_transaction(
    consumer: &BaseConsumer,
    producer: &ThreadedProducer<Acks>,
    tpl: &TopicPartitionList,
) -> Result<()> {
    if tpl.count() > 0 {
        let group = consumer
            .group_metadata()
            .context("the consumer's group metadata")?;
        producer.send_offsets_to_transaction(tpl, &group, TIMEOUT)?;
    }
    producer.commit_transaction(TIMEOUT)?;
    producer.begin_transaction()?;
    Ok(())
}
