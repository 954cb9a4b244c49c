//! `weir-peers`: Weir beside Kafka Streams, Flink and Bytewax on one Apache
//! Kafka broker, with the job written straight on librdkafka as the floor
//! (`weir-native-peer`), on the same pre-written input, each system an external
//! process measured the same way from outside (see [`measure`]): start-up
//! (spawn to first output), steady-state records/s and CPU per million
//! records (first output to last), peak RSS, and an output check (every
//! count 1..n per key, nothing lost; under exactly-once, read
//! `read_committed`, nothing twice).
//!
//! A tool, not a product command: `cargo xtask peers` builds the peers
//! (Maven, a Python virtualenv) and the release binaries, then runs this.

mod measure;
mod system;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use system::{Guarantee, Job, System};
use weir_e2e::{Broker, Input};

#[derive(Parser)]
#[command(
    name = "weir-peers",
    about = "Weir, Kafka Streams, Flink, Bytewax and the native floor on one Kafka broker: identity and running count, at-least-once and exactly-once; records/s, CPU per million, peak RSS, output checked"
)]
struct Cli {
    /// Records of input.
    #[arg(long, default_value_t = 500_000)]
    records: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Workers (threads, slots) of every system.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// Which systems, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,weir,kstreams,flink,bytewax"
    )]
    systems: Vec<System>,
    /// Which jobs.
    #[arg(long, value_delimiter = ',', default_value = "identity,count")]
    jobs: Vec<Job>,
    /// Which delivery guarantees.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "at-least-once,exactly-once"
    )]
    guarantees: Vec<Guarantee>,
    /// A librdkafka option for Weir, KEY=VALUE (repeatable), as
    /// `[kafka.options]`.
    #[arg(long = "weir-option", value_name = "KEY=VALUE")]
    weir_options: Vec<String>,
    /// The `weir` binary to run.
    #[arg(long, default_value = "target/release/weir")]
    weir_binary: PathBuf,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = std::env::current_dir()?;
    let broker = Broker::start().context("start Apache Kafka (the test harness)")?;
    let input = format!("peers-in-{}", std::process::id());
    broker.create_topic(&input, cli.partitions)?;
    let records = input_records(&cli);
    let started = std::time::Instant::now();
    broker.produce(&input, &records)?;
    println!(
        "weir-peers: {} records of {} B over {} keys and {} partitions written in {:.1} s to Apache Kafka {} at {}; parallelism {}; 1 s checkpoints / commit interval",
        cli.records,
        cli.value_bytes,
        cli.keys,
        cli.partitions,
        started.elapsed().as_secs_f64(),
        weir_e2e::broker::kafka_version(),
        broker.bootstrap(),
        cli.parallelism
    );
    let expected = measure::Expected::new(&records);
    let mut results = Vec::new();
    for &job in &cli.jobs {
        for &guarantee in &cli.guarantees {
            for &system in &cli.systems {
                let spec = system::RunSpec {
                    root: root.clone(),
                    bootstrap: broker.bootstrap(),
                    input: input.clone(),
                    output: format!(
                        "peers-{}-{}-{}-{}",
                        system.name(),
                        job.name(),
                        guarantee.short(),
                        results.len()
                    ),
                    job,
                    guarantee,
                    parallelism: cli.parallelism,
                    weir_options: cli.weir_options.clone(),
                    weir_binary: root.join(&cli.weir_binary),
                };
                let Some(command) = system.command(&spec)? else {
                    println!(
                        "  {:<9} {:<8} {:<13} not offered",
                        system.name(),
                        job.name(),
                        guarantee.name()
                    );
                    continue;
                };
                broker.create_topic(&spec.output, cli.partitions)?;
                let limit = std::time::Duration::from_secs(cli.timeout_secs);
                let result = measure::run(command, &spec, cli.partitions, &expected, limit);
                let line = match &result {
                    Ok(r) => r.line(),
                    Err(e) => format!("FAILED: {e:#}"),
                };
                println!(
                    "  {:<9} {:<8} {:<13} {line}",
                    system.name(),
                    job.name(),
                    guarantee.name()
                );
                results.push((system, job, guarantee, result.ok()));
            }
        }
    }
    let json = measure::json(&cli_summary(&cli), &results);
    println!("{json}");
    if let Some(path) = &cli.json {
        std::fs::write(path, &json).with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}

/// `records` records over `keys` keys, key `k<i>` on partition
/// `i % partitions`, values padded to `value_bytes`.
fn input_records(cli: &Cli) -> Vec<Input> {
    (0..cli.records)
        .map(|i| {
            let k = (i * 7919 + i / 3) % cli.keys;
            let mut value = format!("value-{i}-of-k{k}-");
            while value.len() < cli.value_bytes {
                value.push('x');
            }
            Input {
                partition: (k as i32) % cli.partitions,
                key: format!("k{k}"),
                value,
                timestamp: None,
            }
        })
        .collect()
}

fn cli_summary(cli: &Cli) -> String {
    format!(
        "{{\"records\":{},\"value_bytes\":{},\"keys\":{},\"partitions\":{},\"parallelism\":{},\"kafka\":\"{}\"}}",
        cli.records,
        cli.value_bytes,
        cli.keys,
        cli.partitions,
        cli.parallelism,
        weir_e2e::broker::kafka_version()
    )
}
