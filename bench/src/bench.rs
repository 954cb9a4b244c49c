//! The end-to-end benchmark, one broker, one run.
//!
//! The same input (default 1,000,000 records of 100 bytes over 4
//! partitions) goes through four pipelines, each to its own output topic:
//!
//! - (a) a native Rust consume → produce loop in Weir's shape (one
//!   consumer split into per-partition queues, the same threads, one
//!   producer, the same librdkafka settings), minus the plugin: the
//!   ceiling of this design;
//! - (b) Weir with the identity plugin (`mirror.wat`);
//! - (c) Weir with the running-count plugin, at-least-once with 1 s
//!   checkpoints;
//! - (d) (c) at exactly-once (the same 1 s checkpoints).
//!
//! It prints records/s and the process's CPU time per million records for
//! each, and the ratios b/a, c/a, d/c. On a broker that shares the machine,
//! throughput is often broker-bound, so the CPU figures are where the cost
//! of WebAssembly shows. The last line is JSON, for scripts.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir::Config;

/// What to run (the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Records of input.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// `embedded` (librdkafka's mock cluster in this process) or `host:port`.
    #[arg(long, default_value = "embedded")]
    pub bootstrap: String,
    /// Weir's batch size.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Weir's worker threads.
    #[arg(long, default_value_t = 2)]
    pub parallelism: usize,
    /// Where `mirror.wat` and `running_count.wasm` are.
    #[arg(long, default_value = "plugins")]
    pub plugins_dir: PathBuf,
    /// Which pipelines to run, by letter (`--only c,d`: the delivery
    /// guarantees side by side). Ratios need both of their pipelines.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d")]
    pub only: Vec<char>,
    /// A librdkafka producer option for Weir's pipelines, KEY=VALUE
    /// (repeatable), as `[kafka.producer_options]`.
    #[arg(long = "producer-option", value_name = "KEY=VALUE")]
    pub producer_options: Vec<String>,
    /// Weir's pipelines serve `/metrics` and a scraper reads it every
    /// second, to measure what the endpoint costs.
    #[arg(long)]
    pub metrics: bool,
}

/// One pipeline's figures.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub records_per_sec: f64,
    /// User + system CPU seconds of this process per million records.
    pub cpu_per_million: f64,
}

/// What the mock cluster keeps per partition, with headroom below its 5 MiB.
const MOCK_PARTITION_BYTES: usize = 4 << 20;
/// Key and record framing per record in a batched log, roughly.
const MOCK_RECORD_OVERHEAD: usize = 32;

/// Process CPU time (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs the benchmark and prints its report.
pub async fn run(mut opts: BenchOptions) -> anyhow::Result<()> {
    opts.plugins_dir = std::path::absolute(&opts.plugins_dir)?;
    let mock;
    let bootstrap = if opts.bootstrap == "embedded" {
        mock = Some(MockCluster::new(1)?);
        mock.as_ref().expect("set").bootstrap_servers()
    } else {
        mock = None;
        opts.bootstrap.clone()
    };
    let run_id = std::process::id();
    let input = format!("weir-bench-in-{run_id}");
    let outputs =
        ["native", "identity", "count", "eos"].map(|s| format!("weir-bench-{s}-{run_id}"));
    let mut topics = vec![input.clone()];
    topics.extend(outputs.iter().cloned());
    if mock.is_some() {
        // librdkafka's mock cluster keeps at most 5 MiB (and 100,000 record
        // batches) per partition and silently drops the oldest beyond that
        // (rdkafka_mock.c, max_size/max_cnt, not configurable): spread the
        // input so that nothing is dropped before it is read.
        let per_partition = MOCK_PARTITION_BYTES / (opts.value_bytes + MOCK_RECORD_OVERHEAD);
        let needed = i32::try_from(opts.records.div_ceil(per_partition.max(1))).unwrap_or(i32::MAX);
        if needed > opts.partitions {
            println!(
                "weir bench: the embedded mock cluster keeps at most 5 MiB per partition; using {needed} partitions instead of {}",
                opts.partitions
            );
            opts.partitions = needed;
        }
    }
    match &mock {
        Some(m) => {
            for t in &topics {
                m.create_topic(t, opts.partitions, 1)?;
            }
        }
        None => create_topics(&bootstrap, &topics, opts.partitions).await?,
    }
    let t = Instant::now();
    produce_input(&bootstrap, &input, &opts)?;
    println!(
        "weir bench: {} records of {} bytes over {} partitions written in {:.2}s; broker {}; batch_size {}, parallelism {}",
        opts.records,
        opts.value_bytes,
        opts.partitions,
        t.elapsed().as_secs_f64(),
        opts.bootstrap,
        opts.batch_size,
        opts.parallelism
    );

    let wanted = |p: char| opts.only.contains(&p);
    let native = if wanted('a') {
        let (bootstrap, input, out, opts) = (
            bootstrap.clone(),
            input.clone(),
            outputs[0].clone(),
            opts.clone(),
        );
        let f = tokio::task::spawn_blocking(move || native_loop(&bootstrap, &input, &out, &opts))
            .await??;
        report("(a) native consume → produce", &f, None);
        Some(f)
    } else {
        None
    };
    let identity = if wanted('b') {
        let f = weir_run(
            &bootstrap,
            &input,
            &outputs[1],
            "mirror.wat",
            Pipeline::Plain,
            &opts,
        )
        .await?;
        report(
            "(b) weir + identity plugin",
            &f,
            native.as_ref().map(|n| ("b/a", n)),
        );
        Some(f)
    } else {
        None
    };
    let running_count = if wanted('c') {
        let f = weir_run(
            &bootstrap,
            &input,
            &outputs[2],
            "running_count.wasm",
            Pipeline::AtLeastOnce,
            &opts,
        )
        .await?;
        report(
            "(c) weir + running-count, 1 s checkpoints",
            &f,
            native.as_ref().map(|n| ("c/a", n)),
        );
        Some(f)
    } else {
        None
    };
    let exactly_once = if !wanted('d') {
        None
    } else {
        let f = weir_run(
            &bootstrap,
            &input,
            &outputs[3],
            "running_count.wasm",
            Pipeline::ExactlyOnce,
            &opts,
        )
        .await?;
        report(
            "(d) (c) exactly-once, 1 s checkpoints",
            &f,
            running_count.as_ref().map(|c| ("d/c", c)),
        );
        Some(f)
    };
    let rate =
        |f: Option<&Figures>| f.map_or("null".into(), |f| format!("{:.0}", f.records_per_sec));
    let cpu =
        |f: Option<&Figures>| f.map_or("null".into(), |f| format!("{:.3}", f.cpu_per_million));
    let ratio = |x: Option<&Figures>, y: Option<&Figures>| match (x, y) {
        (Some(x), Some(y)) => format!("{:.3}", x.records_per_sec / y.records_per_sec),
        _ => "null".into(),
    };
    let (a, b, c, d) = (
        native.as_ref(),
        identity.as_ref(),
        running_count.as_ref(),
        exactly_once.as_ref(),
    );
    println!(
        "{{\"records\":{},\"value_bytes\":{},\"batch_size\":{},\"partitions\":{},\"native\":{},\"identity\":{},\"running_count\":{},\"exactly_once\":{},\"cpu_per_million\":[{},{},{},{}],\"b_over_a\":{},\"c_over_a\":{},\"d_over_c\":{}}}",
        opts.records,
        opts.value_bytes,
        opts.batch_size,
        opts.partitions,
        rate(a),
        rate(b),
        rate(c),
        rate(d),
        cpu(a),
        cpu(b),
        cpu(c),
        cpu(d),
        ratio(b, a),
        ratio(c, a),
        ratio(d, c),
    );
    drop(mock);
    Ok(())
}

fn report(name: &str, f: &Figures, against: Option<(&str, &Figures)>) {
    let ratio = against
        .map(|(label, base)| {
            format!(
                "   {label} = {:.3}",
                f.records_per_sec / base.records_per_sec
            )
        })
        .unwrap_or_default();
    println!(
        "  {name:<40} {:>12.0} records/s   {:>6.2} CPU s per million{ratio}",
        f.records_per_sec, f.cpu_per_million
    );
}

async fn create_topics(bootstrap: &str, topics: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&new, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Writes the input.
fn produce_input(bootstrap: &str, topic: &str, opts: &BenchOptions) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("queue.buffering.max.messages", "1000000");
    let producer: ThreadedProducer<Count> = config.create_with_context(Count::default())?;
    let value = vec![b'v'; opts.value_bytes];
    let mut key = String::new();
    for i in 0..opts.records {
        key.clear();
        use std::fmt::Write;
        write!(key, "key-{}", i % 10_000).expect("string");
        let mut rec = BaseRecord::<str, [u8], ()>::to(topic)
            .key(key.as_str())
            .payload(&value)
            .partition((i % opts.partitions as usize) as i32);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let (ok, failed) = (
        producer.context().0.load(Ordering::Relaxed),
        producer.context().1.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        ok as usize == opts.records,
        "writing the input: {ok} delivered, {failed} failed"
    );
    Ok(())
}

/// Counts deliveries for the native loop.
#[derive(Default)]
struct Count(AtomicU64, AtomicU64);

impl ClientContext for Count {}

impl ProducerContext for Count {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.1.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// (a): the fastest reasonable native loop, in Weir's shape without the
/// plugin: one consumer whose partitions are split into their own queues
/// (`split_partition_queue`), `parallelism` threads each draining its
/// partitions' queues without waiting while records are there (as a
/// partition task fills a batch), one shared producer, the record handed
/// over unchanged from librdkafka's buffer.
fn native_loop(
    bootstrap: &str,
    input: &str,
    output: &str,
    opts: &BenchOptions,
) -> anyhow::Result<Figures> {
    let producer: ThreadedProducer<Count> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create_with_context(Count::default())?;
    let consumer: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{output}-group"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?,
    );
    let threads = opts.parallelism.max(1);
    let mut queues: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in 0..opts.partitions {
        let q = consumer
            .split_partition_queue(input, p)
            .ok_or_else(|| anyhow::anyhow!("split queue of {input}/{p}"))?;
        queues[p as usize % threads].push(q);
        // Explicit offsets, as Weir assigns them once it has resolved its
        // start positions (`Beginning` costs a lookup per partition first).
        tpl.add_partition_offset(input, p, Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    let seen = AtomicU64::new(0);
    let first = std::sync::OnceLock::<(Instant, f64)>::new();
    let done = std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(300);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (t, mine) in queues.into_iter().enumerate() {
            let (producer, seen, first) = (&producer, &seen, &first);
            let share = (0..opts.records)
                .filter(|i| (i % opts.partitions as usize) % threads == t)
                .count();
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut mine_seen = 0usize;
                // Whether the last pass found records (then the next one
                // polls without waiting).
                let mut busy = true;
                while mine_seen < share {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "native loop: thread {t} saw only {mine_seen} of {share} records"
                    );
                    let mut idle = true;
                    for (i, q) in mine.iter().enumerate() {
                        // After a pass that found nothing anywhere, wait on
                        // the first queue briefly rather than spin.
                        let mut wait = if busy || i > 0 {
                            Duration::ZERO
                        } else {
                            Duration::from_millis(1)
                        };
                        while let Some(m) = q.poll(wait) {
                            let m = m?;
                            wait = Duration::ZERO;
                            idle = false;
                            first.get_or_init(|| (Instant::now(), cpu_seconds()));
                            // Keyed records to the producer's partitioner,
                            // as Weir's sink sends the plugin's output.
                            let mut rec = BaseRecord::<[u8], [u8], ()>::to(output);
                            rec.key = m.key();
                            rec.payload = m.payload();
                            while let Err((_, back)) = producer.send(rec) {
                                rec = back;
                                producer.poll(Duration::from_millis(1));
                            }
                            mine_seen += 1;
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    busy = !idle;
                }
                Ok(())
            }));
        }
        // The consumer's own queue carries its events (errors, stats); it
        // is served as Weir's job loop serves it.
        let serve = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        });
        let mut result = Ok(());
        for h in handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("native loop thread panicked"))
                .and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        done.store(true, Ordering::Relaxed);
        let _ = serve.join();
        result
    })?;
    // The clock stops where Weir's does (its summary's `elapsed`): every
    // record handed to the producer, before the final flush. It starts at
    // the first record, Weir's at the job's start: what differs favours
    // the baseline. CPU time includes the flush, as Weir's does.
    let handed_over = Instant::now();
    producer.flush(Duration::from_secs(120))?;
    let seen = seen.load(Ordering::Relaxed);
    let (started, cpu0) = first.get().copied().unwrap_or((handed_over, cpu_seconds()));
    let elapsed = handed_over.duration_since(started);
    let failed = producer.context().1.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "native loop: {failed} deliveries failed");
    Ok(Figures {
        records_per_sec: seen as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu_per_million: (cpu_seconds() - cpu0) * 1e6 / seen.max(1) as f64,
    })
}

/// How a Weir pipeline of the benchmark delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipeline {
    /// At-least-once, checkpoints off (b).
    Plain,
    /// At-least-once with 1 s checkpoints (c).
    AtLeastOnce,
    /// Exactly-once with 1 s checkpoints (d).
    ExactlyOnce,
}

/// (b), (c), (d): a bounded Weir job over the input.
async fn weir_run(
    bootstrap: &str,
    input: &str,
    output: &str,
    plugin: &str,
    pipeline: Pipeline,
    opts: &BenchOptions,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let scrape_at = if opts.metrics {
        Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    } else {
        None
    };
    let semantics = match pipeline {
        Pipeline::ExactlyOnce => {
            format!("semantics = \"exactly-once\"\ntransactional_id_prefix = \"{output}\"\n")
        }
        _ => String::new(),
    };
    let checkpoint = match pipeline {
        Pipeline::Plain => "",
        _ => "[checkpoint]\nenabled = true\ninterval = \"1s\"\ndirectory = \"checkpoints\"\n",
    };
    let mut producer_options = String::from("[kafka.producer_options]\n");
    if pipeline == Pipeline::ExactlyOnce {
        producer_options.push_str("\"transaction.timeout.ms\" = \"60000\"\n");
    }
    for option in &opts.producer_options {
        let (k, v) = option
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--producer-option {option:?}: not KEY=VALUE"))?;
        producer_options.push_str(&format!("{k:?} = {v:?}\n"));
    }
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{output}-group"

[source]
topics = ["{input}"]
start = {{ mode = "earliest" }}
bounded = true

[sink]
topics = ["{output}"]
{semantics}
[pipeline]
plugins_dir = "{plugins}"
plugin = "{plugin}"
parallelism = {parallelism}
batch_size = {batch_size}

[status]
interval = "0s"

{metrics}
{checkpoint}
{producer_options}"#,
        metrics = match scrape_at {
            Some(addr) => format!("[metrics]\nlisten = \"{addr}\"\n"),
            None => String::new(),
        },
        plugins = opts.plugins_dir.display(),
        parallelism = opts.parallelism,
        batch_size = opts.batch_size,
    );
    let config = Config::parse(&text, dir.path())?;
    let cpu0 = cpu_seconds();
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = scrape_at.map(|addr| {
        let scraping = scraping.clone();
        std::thread::spawn(move || scrape_every_second(addr, &scraping))
    });
    let summary = weir::run(config, std::future::pending()).await?;
    scraping.store(false, Ordering::Relaxed);
    let scrapes = scraper.map(|s| s.join().unwrap_or(0));
    let cpu = cpu_seconds() - cpu0;
    if let Some(n) = scrapes {
        println!("    ({n} scrapes of /metrics during the run)");
    }
    anyhow::ensure!(
        summary.records_in as usize >= opts.records,
        "{plugin}: {} of {} records processed",
        summary.records_in,
        opts.records
    );
    Ok(Figures {
        records_per_sec: summary.records_in as f64 / summary.elapsed.as_secs_f64().max(1e-9),
        cpu_per_million: cpu * 1e6 / summary.records_in as f64,
    })
}

/// Reads `/metrics` at `addr` every second while `scraping`; returns how
/// many scrapes succeeded.
fn scrape_every_second(
    addr: std::net::SocketAddr,
    scraping: &std::sync::atomic::AtomicBool,
) -> usize {
    use std::io::{Read, Write};
    let mut n = 0;
    while scraping.load(Ordering::Relaxed) {
        let got = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).and_then(
            |mut s| {
                write!(
                    s,
                    "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                )?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body.starts_with("HTTP/1.1 200"))
            },
        );
        if got.unwrap_or(false) {
            n += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    n
}
