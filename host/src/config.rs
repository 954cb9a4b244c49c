//! The configuration tree: one serde structure for `config.toml`.
//!
//! Every struct denies unknown fields, so a typo is an error that names the
//! field, line and column (the `toml` crate reports both). Every field has a
//! doc comment: they are the reference documentation of the file. Defaults
//! are functions so that the docs and the code cannot disagree.

mod delivery_mode;
pub mod secret;
use crate::runtime::Limits;
use bytesize::ByteSize;
pub use delivery_mode::DeliveryMode;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors loading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file is not valid TOML, or does not match the schema. The TOML
    /// error names the line, column and field.
    #[error("invalid config file {path}: {cause}")]
    Parse {
        path: PathBuf,
        cause: Box<toml::de::Error>,
    },
    /// The file parses but a value is not acceptable.
    #[error("invalid config{}: `{field}`: {reason}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        field: String,
        reason: String,
    },
}

/// The whole configuration of one Weir job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connection to Kafka.
    pub kafka: KafkaConfig,
    /// What to read.
    pub source: SourceConfig,
    /// Where to write.
    pub sink: SinkConfig,
    /// The plugin and how it runs.
    pub pipeline: PipelineConfig,
    /// Periodic checkpoints of offsets and plugin state.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// What each plugin instance may use.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The periodic status line.
    #[serde(default)]
    pub status: StatusConfig,
    /// Prometheus metrics and health checks over HTTP.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The directory the config file was read from; relative paths in the
    /// file are resolved against it. Not a TOML field.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this config came from, for error messages. Not a TOML field.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[kafka]`: brokers, consumer group and librdkafka passthrough. The
/// brokers and the option values may come from the environment or a file
/// ([`secret`]); `Debug` does not print secret option values.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port` list, or `embedded` to start librdkafka's in-process mock
    /// cluster with the built-in sample input (the zero-setup demo).
    #[serde(deserialize_with = "secret::string")]
    pub bootstrap_servers: String,
    /// Consumer group: its committed offsets are the `group-offsets` start
    /// position, and processed offsets are committed to it.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// How long to wait for the brokers at start-up before failing.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Any librdkafka option, passed to both consumer and producer
    /// (e.g. `"auto.offset.reset" = "earliest"`, `"compression.type"`).
    #[serde(default, deserialize_with = "secret::map")]
    pub options: BTreeMap<String, String>,
    /// librdkafka options for the consumer only.
    #[serde(default, deserialize_with = "secret::map")]
    pub consumer_options: BTreeMap<String, String>,
    /// librdkafka options for the producer only.
    #[serde(default, deserialize_with = "secret::map")]
    pub producer_options: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &secret::redacted(&self.options))
            .field(
                "consumer_options",
                &secret::redacted(&self.consumer_options),
            )
            .field(
                "producer_options",
                &secret::redacted(&self.producer_options),
            )
            .finish()
    }
}

/// `[source]`: the input topics and where to start reading them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Input topics. A plugin sees a record's topic as its index here.
    pub topics: Vec<String>,
    /// Where to start when there is no checkpoint to restore.
    #[serde(default)]
    pub start: StartPosition,
    /// Stop once every partition reaches the end offset it had when the job
    /// started (a bounded job, like Flink's `setBounded(latest())`).
    #[serde(default)]
    pub bounded: bool,
    /// How often a running (unbounded) job looks for new partitions of its
    /// topics; each is read from its first offset, like Flink's partition
    /// discovery (whose default is also 5 minutes). `"0s"` turns it off.
    #[serde(
        default = "default_partition_discovery_interval",
        with = "humantime_serde"
    )]
    pub partition_discovery_interval: Duration,
    /// Who decides which partitions this process reads: `"manual"` (this
    /// process reads every partition of its topics, as Flink's source
    /// does) or `"group"` (the processes of the consumer group share them,
    /// as Kafka Streams does, each partition's state following it).
    #[serde(default)]
    pub assignment: Assignment,
}

/// Who assigns partitions to the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Every partition of the source topics, assigned at start.
    #[default]
    Manual,
    /// The consumer group's assignment, changing as processes join and
    /// leave.
    Group,
}

/// Start position, as Flink's Kafka source defines it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StartPosition {
    /// The group's committed offset, else `auto.offset.reset`
    /// (`earliest`, `latest`, or `none` to fail).
    #[default]
    GroupOffsets,
    /// The first offset of every partition, ignoring committed offsets.
    Earliest,
    /// The end of every partition, ignoring committed offsets.
    Latest,
    /// The first offset whose timestamp is at or after `timestamp_ms`.
    Timestamp {
        /// Milliseconds since the Unix epoch.
        timestamp_ms: i64,
    },
    /// An explicit offset per partition: `offsets = { topic = { "0" = 42 } }`.
    /// Partitions not listed fall back to `group-offsets`.
    Specific {
        /// Topic → partition (as a string key) → offset.
        offsets: BTreeMap<String, BTreeMap<String, i64>>,
    },
}

/// `[sink]`: the output topics and the delivery guarantee.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Output topics. A plugin chooses among them by index (0 = first).
    pub topics: Vec<String>,
    /// `none`, `at-least-once` (default) or `exactly-once`.
    #[serde(default)]
    pub semantics: DeliveryGuarantee,
    /// at-least-once: log and count failed sends instead of failing the job.
    #[serde(default)]
    pub log_failures_only: bool,
    /// Producer retries for a failed send (librdkafka
    /// `message.send.max.retries`); unset keeps librdkafka's default.
    #[serde(default)]
    pub retries: Option<u32>,
    /// exactly-once: prefix of the transactional ids (`<prefix>-<worker>`,
    /// one per worker).
    #[serde(default = "default_transactional_id_prefix")]
    pub transactional_id_prefix: String,
}

/// Sink delivery guarantee, as Flink's `DeliveryGuarantee`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryGuarantee {
    /// Fire and forget: nothing is flushed on checkpoint.
    None,
    /// Everything produced before a checkpoint is acknowledged before the
    /// checkpoint completes; replays after a failure may duplicate.
    #[default]
    AtLeastOnce,
    /// Kafka transactions committed with each checkpoint.
    ExactlyOnce,
}

/// `[checkpoint]`: periodic, consistent snapshots of offsets and state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Take checkpoints (and restore the latest one on start).
    #[serde(default)]
    pub enabled: bool,
    /// Time between checkpoints.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Where checkpoints live: a path relative to the config file, or an
    /// object-store URL, `s3://bucket/prefix` (S3 or an S3-compatible
    /// store; group assignment only for now), that several processes
    /// share.
    #[serde(default = "default_checkpoint_dir")]
    pub directory: PathBuf,
    /// Options of the object store `directory` names, passed to its
    /// client: `endpoint`, `region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_allow_http`, `timeout`, ... (the
    /// `AWS_*` environment fills in the rest). Ignored for a local path.
    #[serde(default)]
    pub store_options: BTreeMap<String, String>,
    /// How many complete checkpoints to keep.
    #[serde(default = "default_retain")]
    pub retain: usize,
    /// Commit the checkpointed offsets to the consumer group when a
    /// checkpoint completes.
    #[serde(default = "default_true")]
    pub commit_offsets_on_checkpoint: bool,
    /// Restore state taken with a different plugin module (by SHA-256).
    #[serde(default)]
    pub allow_module_change: bool,
    /// A checkpoint stores only the 4 KiB pages of plugin memory written
    /// since the partition's previous checkpoint (a delta chained to it),
    /// so its cost grows with what changed, not with the state's size.
    /// Restoring applies the chain to its full snapshot, so the chain is
    /// kept short: a partition's full state is written at least every this
    /// many checkpoints, and sooner when its deltas add up to more than its
    /// memory. 1 writes full snapshots only.
    #[serde(default = "default_full_snapshot_every")]
    pub full_snapshot_every: u32,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: false,
            interval: default_checkpoint_interval(),
            directory: default_checkpoint_dir(),
            store_options: BTreeMap::new(),
            retain: default_retain(),
            commit_offsets_on_checkpoint: true,
            allow_module_change: false,
            full_snapshot_every: default_full_snapshot_every(),
        }
    }
}

/// `[pipeline]`: the plugin and how many workers run it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The plugin module: a `.wasm` (or `.wat`) path relative to `plugins_dir`.
    pub plugin: PathBuf,
    /// Where plugins live, relative to the config file.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Worker threads. Partitions are spread over them as Flink does; with
    /// more workers than partitions some stay idle.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Most records handed to the plugin in one call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The plugin's own settings, given to its `weir_init` on a fresh start.
    #[serde(default)]
    pub config: toml::Table,
    /// How often a failed partition task is restarted (from its last
    /// checkpoint) before the job gives up and exits non-zero.
    #[serde(default = "default_restart_attempts")]
    pub restart_attempts: u32,
    /// Wait before the first restart; doubles with every further attempt.
    #[serde(default = "default_restart_backoff", with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// On SIGTERM or SIGINT the job stops fetching, finishes its in-flight
    /// batches, takes a final checkpoint (exactly-once: commits its open
    /// transactions), flushes and exits 0; if that takes longer than this,
    /// `weir run` exits non-zero. Below `docker stop`'s 10 s grace period
    /// by default. A second signal stops at once.
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Hot reload on change: while the job runs, a change of the config
    /// file or of the plugin module file (its size or modification time,
    /// looked at every second) switches the job to the module the config
    /// names then, as `weir reload` does. Off unless set.
    #[serde(default)]
    pub reload_on_change: bool,
    /// After a reload, the new module is on trial until every partition
    /// has processed a batch with it, or this long at most: no checkpoint
    /// is taken meanwhile, and a batch that fails (a plugin fault, whatever
    /// `on_fault` then does, or output refused) rolls the switch back to the module that ran, from the checkpoint the switch
    /// took (under exactly-once the new module's output is aborted).
    #[serde(default = "default_reload_trial", with = "humantime_serde")]
    pub reload_trial: Duration,
    /// What a plugin fault (trap, limit, bad pointer, error status) does:
    /// `fail` restarts the partition task from its last checkpoint and, once
    /// `restart_attempts` are used, stops the job; `skip` drops the record
    /// that faulted and goes on; `dead-letter` also writes it to
    /// `dead_letter_topic`.
    #[serde(default)]
    pub on_fault: FaultPolicy,
    /// `on_fault = "dead-letter"`: the topic that receives each input record
    /// that faulted, with headers naming the error and where it came from.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Plugins that export `weir_tick` (ABI 1.1): the longest a partition
    /// goes without a tick while no record arrives. A tick also follows
    /// every batch that advances the partition's watermark.
    #[serde(default = "default_tick_interval", with = "humantime_serde")]
    pub tick_interval: Duration,
    /// How far the event-time watermark trails the highest record
    /// timestamp of its partition (Flink's bounded out-of-orderness): the
    /// watermark is that timestamp minus this minus 1 ms, and records
    /// stamped at or below it are late.
    #[serde(default = "default_max_out_of_orderness", with = "humantime_serde")]
    pub max_out_of_orderness: Duration,
    /// If set, a partition that has had no record for this long takes the
    /// processing time as its highest timestamp, so its watermark advances
    /// and windows close on silence. Not deterministic under replay: leave
    /// it unset where exactly-once output must not depend on timing.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
}

/// What a plugin fault does to its partition task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultPolicy {
    /// Restart from the last checkpoint with backoff; then stop the job.
    #[default]
    Fail,
    /// Log and count the record that faulted, then go on without it.
    Skip,
    /// Write the record that faulted to the dead-letter topic, then go on.
    DeadLetter,
}

/// `[limits]`: what one plugin instance may use. Going past a limit is a
/// plugin fault that names the limit; `pipeline.on_fault` decides what
/// happens next. Sizes take units (`"512 MiB"`) or plain bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most linear memory per instance.
    #[serde(default = "default_memory_limit")]
    pub memory: ByteSize,
    /// Wall-clock budget of one plugin call (one batch); an endless loop is
    /// stopped after this long.
    #[serde(default = "default_batch_timeout", with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Most wasm stack (deep recursion faults past it). Process-wide.
    #[serde(default = "default_stack_limit")]
    pub stack: ByteSize,
    /// Most records a plugin may emit while processing one input batch.
    #[serde(default = "default_max_output_records")]
    pub max_output_records: u64,
    /// Most bytes (keys, values, headers) emitted per input batch.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: ByteSize,
    /// Most bytes of one emitted record (Kafka's own default
    /// `message.max.bytes` is about 1 MiB).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: ByteSize,
    /// Fuel (roughly, wasm instructions) per plugin call. Unset: no fuel
    /// metering, which is faster; the time budget still applies.
    #[serde(default)]
    pub fuel: Option<u64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory: default_memory_limit(),
            batch_timeout: default_batch_timeout(),
            stack: default_stack_limit(),
            max_output_records: default_max_output_records(),
            max_output_bytes: default_max_output_bytes(),
            max_record_bytes: default_max_record_bytes(),
            fuel: None,
        }
    }
}

impl LimitsConfig {
    /// The runtime's form.
    pub fn to_limits(&self) -> Limits {
        Limits {
            memory: self.memory.as_u64() as usize,
            batch_timeout: self.batch_timeout,
            stack: self.stack.as_u64() as usize,
            max_output_records: self.max_output_records,
            max_output_bytes: self.max_output_bytes.as_u64(),
            max_record_bytes: self.max_record_bytes.as_u64(),
            fuel: self.fuel,
        }
    }
}

/// `[status]`: the periodic progress line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// How often to log records in/out per second and partition positions;
    /// `0s` turns it off.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            interval: default_status_interval(),
        }
    }
}

/// `[metrics]`: Prometheus text at `/metrics`, `/healthz` and `/readyz`
/// over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve on, e.g. `127.0.0.1:9464`; unset: no endpoint.
    /// Bind a loopback address unless the port is meant to be reachable.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// `/readyz` fails once the last completed checkpoint (or the job's
    /// start, before the first) is older than this many checkpoint
    /// intervals.
    #[serde(default = "default_ready_checkpoint_intervals")]
    pub ready_checkpoint_intervals: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            ready_checkpoint_intervals: default_ready_checkpoint_intervals(),
        }
    }
}

fn default_ready_checkpoint_intervals() -> u32 {
    3
}

fn default_group_id() -> String {
    "weir".to_string()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_parallelism() -> usize {
    1
}
fn default_batch_size() -> usize {
    1024
}
fn default_restart_attempts() -> u32 {
    3
}
fn default_partition_discovery_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_tick_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_out_of_orderness() -> Duration {
    Duration::ZERO
}
fn default_restart_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(8)
}
fn default_reload_trial() -> Duration {
    Duration::from_secs(10)
}
fn default_memory_limit() -> ByteSize {
    ByteSize(Limits::default().memory as u64)
}
fn default_batch_timeout() -> Duration {
    Limits::default().batch_timeout
}
fn default_stack_limit() -> ByteSize {
    ByteSize(Limits::default().stack as u64)
}
fn default_max_output_records() -> u64 {
    Limits::default().max_output_records
}
fn default_max_output_bytes() -> ByteSize {
    ByteSize(Limits::default().max_output_bytes)
}
fn default_max_record_bytes() -> ByteSize {
    ByteSize(Limits::default().max_record_bytes)
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_checkpoint_dir() -> PathBuf {
    PathBuf::from("checkpoints")
}
fn default_retain() -> usize {
    3
}
/// Default of `checkpoint.full_snapshot_every` (also the checkpoint
/// store's when it is opened without a config).
pub fn default_full_snapshot_every() -> u32 {
    10
}
fn default_true() -> bool {
    true
}
fn default_transactional_id_prefix() -> String {
    "weir".to_string()
}
fn default_status_interval() -> Duration {
    Duration::from_secs(5)
}

/// The bootstrap value that selects the embedded mock cluster.
pub const EMBEDDED: &str = "embedded";

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Config::parse(&text, &base_dir).map_err(|e| match e {
            ConfigError::Parse { cause, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                cause,
            },
            ConfigError::Invalid { field, reason, .. } => ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                field,
                reason,
            },
            other => other,
        })?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// How this job makes output and progress durable (decided here once).
    pub fn delivery_mode(&self) -> DeliveryMode {
        DeliveryMode::of(self)
    }

    /// Parses and validates config text; relative paths resolve against
    /// `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            cause: Box::new(e),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Checks what serde cannot: non-empty lists, ranges, cross-field rules.
    /// The transaction timeout Weir sets when the user does not: librdkafka's
    /// 60 s; with group assignment the shortest that validation accepts,
    /// and at least 15 s. A process killed mid-transaction leaves its
    /// transaction open until this timeout, and its partitions' next owner
    /// waits that long for their committed offsets to become stable
    /// (Kafka Streams shortens it to 10 s for the same reason).
    pub fn default_transaction_timeout_ms(&self) -> u64 {
        if self.source.assignment != Assignment::Group {
            return 60_000;
        }
        let interval_ms = u64::try_from(self.checkpoint.interval.as_millis()).unwrap_or(u64::MAX);
        interval_ms
            .saturating_mul(2)
            .saturating_add(10_000)
            .max(15_000)
    }

    /// The transaction timeout in effect (the user's, or the default).
    pub fn transaction_timeout(&self) -> Duration {
        let key = "transaction.timeout.ms";
        let ms = self
            .kafka
            .producer_options
            .get(key)
            .or_else(|| self.kafka.options.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| self.default_transaction_timeout_ms());
        Duration::from_millis(ms)
    }

    /// `source.assignment = "group"`: what it needs for now.
    fn validate_group(&self) -> Result<(), ConfigError> {
        let field = "source.assignment";
        if !self.checkpoint.enabled {
            return Err(self.invalid(
                field,
                "\"group\" needs [checkpoint] enabled = true: a partition's state follows it to its next owner through its checkpoints",
            ));
        }
        if self.source.bounded {
            return Err(self.invalid(
                field,
                "\"group\" cannot be bounded: the group's assignment changes while it runs",
            ));
        }
        if self.source.start != StartPosition::GroupOffsets {
            return Err(self.invalid(
                field,
                "\"group\" starts every partition at the group's committed offset (source.start = { mode = \"group-offsets\" })",
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(self.invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        if self.source.topics.is_empty() {
            return Err(self.invalid("source.topics", "name at least one topic"));
        }
        if self.sink.topics.is_empty() {
            return Err(self.invalid("sink.topics", "name at least one topic"));
        }
        if self.pipeline.parallelism == 0 {
            return Err(self.invalid("pipeline.parallelism", "must be at least 1"));
        }
        if self.pipeline.batch_size == 0 {
            return Err(self.invalid("pipeline.batch_size", "must be at least 1"));
        }
        for (key, _) in self
            .kafka
            .options
            .iter()
            .chain(&self.kafka.consumer_options)
        {
            if matches!(key.as_str(), "bootstrap.servers" | "group.id") {
                return Err(self.invalid(
                    &format!("kafka.options.\"{key}\""),
                    "set it with kafka.bootstrap_servers / kafka.group_id instead",
                ));
            }
        }
        if self.checkpoint.enabled && self.checkpoint.interval.is_zero() {
            return Err(self.invalid("checkpoint.interval", "must be greater than 0"));
        }
        if self.checkpoint.retain == 0 {
            return Err(self.invalid("checkpoint.retain", "must be at least 1"));
        }
        if self.checkpoint.full_snapshot_every == 0 {
            return Err(self.invalid(
                "checkpoint.full_snapshot_every",
                "must be at least 1 (1 writes full snapshots only)",
            ));
        }
        if self.source.assignment == Assignment::Group {
            self.validate_group()?;
        } else if crate::checkpoint::folder::is_url(&self.checkpoint.directory) {
            return Err(self.invalid(
                "checkpoint.directory",
                "an object-store URL needs source.assignment = \"group\" for now (the checkpoint store of manual assignment is a local directory)",
            ));
        }
        if self.sink.semantics == DeliveryGuarantee::ExactlyOnce {
            if !self.checkpoint.enabled {
                return Err(self.invalid(
                    "sink.semantics",
                    "exactly-once commits a Kafka transaction at every checkpoint; set [checkpoint] enabled = true",
                ));
            }
            let key = "transaction.timeout.ms";
            let default_timeout = self.default_transaction_timeout_ms().to_string();
            let (field, value) = match (
                self.kafka.producer_options.get(key),
                self.kafka.options.get(key),
            ) {
                (Some(v), _) => (format!("kafka.producer_options.\"{key}\""), v.as_str()),
                (None, Some(v)) => (format!("kafka.options.\"{key}\""), v.as_str()),
                (None, None) => (
                    format!("kafka.producer_options.\"{key}\""),
                    &*default_timeout,
                ),
            };
            let ms: u64 = value.parse().map_err(|_| {
                self.invalid(&field, format!("{value:?} is not a number of milliseconds"))
            })?;
            let interval_ms =
                u64::try_from(self.checkpoint.interval.as_millis()).unwrap_or(u64::MAX);
            let needed = interval_ms.saturating_mul(2).saturating_add(10_000);
            if ms < needed {
                return Err(self.invalid(
                    &field,
                    format!(
                        "{ms} ms is too short for checkpoint.interval = {:?}: a transaction stays open for a whole interval plus recovery; use at least {needed} ms",
                        self.checkpoint.interval
                    ),
                ));
            }
        }
        self.validate_limits()?;
        match (self.pipeline.on_fault, &self.pipeline.dead_letter_topic) {
            (FaultPolicy::DeadLetter, None) => {
                return Err(self.invalid(
                    "pipeline.dead_letter_topic",
                    "on_fault = \"dead-letter\" needs the topic to write faulted records to",
                ));
            }
            (FaultPolicy::DeadLetter, Some(t)) if t.trim().is_empty() => {
                return Err(self.invalid("pipeline.dead_letter_topic", "must not be empty"));
            }
            (FaultPolicy::Fail | FaultPolicy::Skip, Some(_)) => {
                return Err(self.invalid(
                    "pipeline.dead_letter_topic",
                    "only used with on_fault = \"dead-letter\"",
                ));
            }
            _ => {}
        }
        if let StartPosition::Specific { offsets } = &self.source.start {
            for (topic, parts) in offsets {
                if !self.source.topics.contains(topic) {
                    return Err(self.invalid(
                        &format!("source.start.offsets.{topic}"),
                        "not one of source.topics",
                    ));
                }
                for (p, off) in parts {
                    if p.parse::<i32>().map_or(true, |p| p < 0) {
                        return Err(self.invalid(
                            &format!("source.start.offsets.{topic}.\"{p}\""),
                            "partition keys must be non-negative integers",
                        ));
                    }
                    if *off < 0 {
                        return Err(self.invalid(
                            &format!("source.start.offsets.{topic}.\"{p}\""),
                            "offsets must be non-negative",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        const PAGE: u64 = 64 << 10;
        if l.memory.as_u64() < PAGE || l.memory.as_u64() > 4 << 30 {
            return Err(self.invalid("limits.memory", "must be between 64 KiB and 4 GiB"));
        }
        if l.stack.as_u64() < 16 << 10 || l.stack.as_u64() > 64 << 20 {
            return Err(self.invalid("limits.stack", "must be between 16 KiB and 64 MiB"));
        }
        if l.batch_timeout.is_zero() {
            return Err(self.invalid("limits.batch_timeout", "must be greater than 0"));
        }
        if l.max_output_records == 0 {
            return Err(self.invalid("limits.max_output_records", "must be at least 1"));
        }
        if l.max_record_bytes.as_u64() == 0 || l.max_record_bytes > l.max_output_bytes {
            return Err(self.invalid(
                "limits.max_record_bytes",
                "must be at least 1 byte and at most limits.max_output_bytes",
            ));
        }
        if l.fuel == Some(0) {
            return Err(self.invalid("limits.fuel", "must be at least 1 (or unset)"));
        }
        Ok(())
    }

    /// The plugin module's full path.
    pub fn plugin_path(&self) -> PathBuf {
        self.base_dir
            .join(&self.pipeline.plugins_dir)
            .join(&self.pipeline.plugin)
    }

    /// The checkpoint directory's full path.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.base_dir.join(&self.checkpoint.directory)
    }

    /// Where the checkpoint files live: the local directory, or the object
    /// store `checkpoint.directory` names.
    pub fn checkpoint_location(
        &self,
    ) -> Result<crate::checkpoint::folder::StoreLocation, crate::checkpoint::CheckpointError> {
        crate::checkpoint::folder::StoreLocation::open(
            &self.checkpoint.directory,
            self.checkpoint_dir(),
            &self.checkpoint.store_options,
        )
    }

    /// Whether the embedded mock cluster is selected.
    pub fn is_embedded(&self) -> bool {
        self.kafka.bootstrap_servers.trim() == EMBEDDED
    }

    /// The plugin's config table flattened to dotted keys and text values,
    /// the form `weir_init` receives.
    pub fn plugin_config_entries(&self) -> Vec<(String, String)> {
        plugin_config_entries(&self.pipeline.config)
    }
}

/// A `[pipeline.config]` table as the entries `weir_init` receives:
/// nested tables flattened into dotted keys, strings without quotes, other
/// values as TOML text (docs/ABI.md, section 6).
pub fn plugin_config_entries(table: &toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    flatten("", table, &mut out);
    out
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
bootstrap_servers = "localhost:9092"
[source]
topics = ["in"]
[sink]
topics = ["out"]
[pipeline]
plugin = "p.wasm"
"#;

    #[test]
    fn shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let config = Config::load(&dir.join("config.toml")).expect("shipped config.toml");
        assert!(config.is_embedded());
        // The demo needs no plugin build: its plugin is text the host loads.
        assert!(config.plugin_path().ends_with("wat_running_count.wat"));
        assert!(config.plugin_path().is_file());
        assert!(config.checkpoint.enabled);
    }

    #[test]
    fn group_assignment_has_checkpoints_is_unbounded_and_starts_from_group_offsets() {
        let group = |source: &str, sink: &str| {
            let text = MINIMAL
                .replace(
                    "[source]\n",
                    &format!("[source]\nassignment = \"group\"\n{source}\n"),
                )
                .replace("[sink]\n", &format!("[sink]\n{sink}\n"));
            let on = "[checkpoint]\nenabled = true\ninterval = \"1s\"";
            Config::parse(&format!("{text}\n{on}"), Path::new("."))
                .and_then(|c| c.validate().map(|()| c))
        };
        let eos = "semantics = \"exactly-once\"";
        let c = group("", eos).expect("exactly-once in a group");
        assert_eq!(c.source.assignment, Assignment::Group);
        // A dead member's transaction must not hold its partitions for 60 s.
        assert_eq!(c.default_transaction_timeout_ms(), 15_000);
        assert_eq!(c.transaction_timeout(), Duration::from_secs(15));
        let alo = group("", "").expect("at-least-once in a group");
        assert_eq!(alo.sink.semantics, DeliveryGuarantee::AtLeastOnce);
        let off = MINIMAL.replace("[source]\n", "[source]\nassignment = \"group\"\n");
        let err = Config::parse(&off, Path::new("."))
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.assignment") && err.contains("[checkpoint]"),
            "{err}"
        );
        let err = group("bounded = true", eos).unwrap_err().to_string();
        assert!(err.contains("bounded"), "{err}");
        let manual = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(manual.default_transaction_timeout_ms(), 60_000);
    }

    #[test]
    fn an_object_store_directory_needs_group_assignment() {
        let s3 = "[checkpoint]\nenabled = true\ndirectory = \"s3://bucket/jobs/a\"\n[checkpoint.store_options]\nregion = \"eu-west-1\"";
        let err = Config::parse(&format!("{MINIMAL}\n{s3}"), Path::new("."))
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checkpoint.directory") && err.contains("assignment = \"group\""),
            "{err}"
        );
        let text = MINIMAL.replace("[source]\n", "[source]\nassignment = \"group\"\n");
        let group = Config::parse(&format!("{text}\n{s3}"), Path::new(".")).unwrap();
        group.validate().unwrap();
        assert_eq!(group.checkpoint.store_options["region"], "eu-west-1");
        let location = group.checkpoint_location().unwrap();
        assert_eq!(format!("{location:?}"), "s3://bucket/jobs/a");
    }

    #[test]
    fn defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/weir")).unwrap();
        assert_eq!(c.pipeline.parallelism, 1);
        assert_eq!(c.source.start, StartPosition::GroupOffsets);
        assert_eq!(c.plugin_path(), Path::new("/etc/weir/plugins/p.wasm"));
        assert_eq!(c.kafka.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn option_values_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        // SAFETY: a variable no other test reads or writes.
        unsafe { std::env::set_var("WEIR_CONFIG_TEST_BROKER", "broker-7") };
        let text = MINIMAL.replace(
            "bootstrap_servers = \"localhost:9092\"",
            &format!(
                "bootstrap_servers = \"${{WEIR_CONFIG_TEST_BROKER}}:9092\"\n[kafka.options]\n\"sasl.password\" = {{ file = \"{}\" }}",
                file.display()
            ),
        );
        let c = Config::parse(&text, Path::new(".")).unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "broker-7:9092");
        assert_eq!(c.kafka.options["sasl.password"], "from-a-file");
        let shown = format!("{c:?}");
        assert!(!shown.contains("from-a-file"), "{shown}");
    }

    #[test]
    fn a_missing_variable_names_it_with_the_line() {
        let text = MINIMAL.replace(
            "bootstrap_servers = \"localhost:9092\"",
            "bootstrap_servers = \"localhost:9092\"\n[kafka.producer_options]\n\"sasl.password\" = \"${WEIR_CONFIG_TEST_UNSET}\"",
        );
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEIR_CONFIG_TEST_UNSET is not set"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text = MINIMAL.replace("plugin = \"p.wasm\"", "plugin = \"p.wasm\"\nparalelism = 2");
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("paralelism"), "{err}");
        assert!(err.contains("line 10"), "{err}");
    }

    #[test]
    fn wrong_type_names_field_and_line() {
        let text = MINIMAL.replace("topics = [\"out\"]", "topics = \"out\"");
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 7"), "{err}");
        assert!(err.contains("sequence"), "{err}");
    }

    #[test]
    fn start_positions_parse() {
        for (snippet, want) in [
            ("mode = \"earliest\"", StartPosition::Earliest),
            ("mode = \"latest\"", StartPosition::Latest),
            (
                "mode = \"timestamp\"\ntimestamp_ms = 1700000000000",
                StartPosition::Timestamp {
                    timestamp_ms: 1_700_000_000_000,
                },
            ),
        ] {
            let text = format!("{MINIMAL}\n[source.start]\n{snippet}\n");
            let text = text.replacen("[source]\ntopics = [\"in\"]", "", 1);
            let text = format!("[source]\ntopics = [\"in\"]\n{text}");
            let c = Config::parse(&text, Path::new(".")).unwrap();
            assert_eq!(c.source.start, want);
        }
    }

    #[test]
    fn specific_offsets_are_validated() {
        let text = MINIMAL.replace(
            "topics = [\"in\"]",
            "topics = [\"in\"]\nstart = { mode = \"specific\", offsets = { in = { \"x\" = 3 } } }",
        );
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.start.offsets.in.\"x\""), "{err}");
    }

    #[test]
    fn exactly_once_needs_checkpoints_and_a_long_enough_transaction_timeout() {
        let eos = MINIMAL.replace(
            "topics = [\"out\"]",
            "topics = [\"out\"]\nsemantics = \"exactly-once\"",
        );
        let err = Config::parse(&eos, Path::new(".")).unwrap_err().to_string();
        assert!(
            err.contains("`sink.semantics`") && err.contains("enabled = true"),
            "{err}"
        );

        let with_ck = format!("{eos}\n[checkpoint]\nenabled = true\ninterval = \"30s\"\n");
        let err = Config::parse(&with_ck, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("transaction.timeout.ms"), "{err}");
        assert!(err.contains("60000 ms is too short"), "{err}");

        let fixed = with_ck.replace(
            "[kafka]\nbootstrap_servers = \"localhost:9092\"",
            "[kafka]\nbootstrap_servers = \"localhost:9092\"\nproducer_options = { \"transaction.timeout.ms\" = \"90000\" }",
        );
        let c = Config::parse(&fixed, Path::new(".")).unwrap();
        assert_eq!(c.sink.semantics, DeliveryGuarantee::ExactlyOnce);
    }

    /// Found by the `config_parse` fuzz target: a huge interval overflowed.
    #[test]
    fn a_huge_checkpoint_interval_is_an_error_not_an_overflow() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/regressions/config_parse/checkpoint_interval_mul_overflow.toml"),
        )
        .unwrap();
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("transaction.timeout.ms"), "{err}");
    }

    #[test]
    fn checkpoint_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/jobs")).unwrap();
        assert!(!c.checkpoint.enabled);
        assert_eq!(c.checkpoint.interval, Duration::from_secs(5));
        assert!(c.checkpoint.commit_offsets_on_checkpoint);
        assert_eq!(c.checkpoint_dir(), Path::new("/jobs/checkpoints"));
        assert_eq!(c.sink.semantics, DeliveryGuarantee::AtLeastOnce);
        assert_eq!(c.pipeline.restart_attempts, 3);
    }

    #[test]
    fn limits_take_units_and_name_bad_values() {
        let c = Config::parse(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.limits.to_limits(), Limits::default());
        assert_eq!(c.pipeline.on_fault, FaultPolicy::Fail);

        let text = format!(
            "{MINIMAL}\n[limits]\nmemory = \"64 MiB\"\nbatch_timeout = \"250ms\"\nmax_record_bytes = 1000\nfuel = 5000\n"
        );
        let l = Config::parse(&text, Path::new("."))
            .unwrap()
            .limits
            .to_limits();
        assert_eq!(l.memory, 64 << 20);
        assert_eq!(l.batch_timeout, Duration::from_millis(250));
        assert_eq!(l.max_record_bytes, 1000);
        assert_eq!(l.fuel, Some(5000));

        let text = format!("{MINIMAL}\n[limits]\nmemory = \"lots\"\n");
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory") && err.contains("line 12"), "{err}");

        let text = format!("{MINIMAL}\n[limits]\nmemory = \"8 GiB\"\n");
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`limits.memory`"), "{err}");
    }

    #[test]
    fn dead_letter_needs_its_topic() {
        let text = MINIMAL.replace(
            "plugin = \"p.wasm\"",
            "plugin = \"p.wasm\"\non_fault = \"dead-letter\"",
        );
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`pipeline.dead_letter_topic`"), "{err}");
        let ok = text.replace(
            "on_fault = \"dead-letter\"",
            "on_fault = \"dead-letter\"\ndead_letter_topic = \"dlq\"",
        );
        let c = Config::parse(&ok, Path::new(".")).unwrap();
        assert_eq!(c.pipeline.on_fault, FaultPolicy::DeadLetter);
        let err = Config::parse(
            &MINIMAL.replace(
                "plugin = \"p.wasm\"",
                "plugin = \"p.wasm\"\non_fault = \"ignore\"",
            ),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ignore") && err.contains("line 10"), "{err}");
    }

    #[test]
    fn plugin_config_flattens() {
        let text = format!(
            "{MINIMAL}\n[pipeline.config]\nword = \"a\"\nmin = 3\n[pipeline.config.rule]\non = true\n"
        );
        let c = Config::parse(&text, Path::new(".")).unwrap();
        let entries = c.plugin_config_entries();
        assert!(entries.contains(&("word".into(), "a".into())));
        assert!(entries.contains(&("min".into(), "3".into())));
        assert!(entries.contains(&("rule.on".into(), "true".into())));
    }
}
