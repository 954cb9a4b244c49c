//! How a job makes its output and its progress durable, decided once from
//! `[sink] semantics`, `[checkpoint] enabled` and the consumer's
//! `enable.auto.commit`, and passed on as this type.

use super::{Config, DeliveryGuarantee};

/// The job's delivery mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Checkpoints off. With `auto_commit` (librdkafka's default), the
    /// offsets of delivered output are committed as they are delivered;
    /// without, only the end of a bounded job commits.
    Uncheckpointed { auto_commit: bool },
    /// Checkpoints in the checkpoint store, which is the source of truth.
    /// With `flush` (at-least-once), a checkpoint completes only once the
    /// output before it is acknowledged; without (`semantics = "none"`),
    /// output is fire and forget.
    Checkpointed { flush: bool },
    /// Exactly-once: one Kafka transaction per worker, committed at each
    /// checkpoint with the offsets; Kafka is the source of truth and each
    /// partition's state files are keyed by its committed offset.
    Transactional,
}

impl DeliveryMode {
    /// The mode `config` asks for (validated: exactly-once has checkpoints).
    pub fn of(config: &Config) -> DeliveryMode {
        match (config.checkpoint.enabled, config.sink.semantics) {
            (_, DeliveryGuarantee::ExactlyOnce) => DeliveryMode::Transactional,
            (true, semantics) => DeliveryMode::Checkpointed {
                flush: semantics != DeliveryGuarantee::None,
            },
            (false, _) => {
                let user = config
                    .kafka
                    .consumer_options
                    .get("enable.auto.commit")
                    .or_else(|| config.kafka.options.get("enable.auto.commit"));
                DeliveryMode::Uncheckpointed {
                    auto_commit: user.is_none_or(|v| v != "false"),
                }
            }
        }
    }

    /// Whether the job takes checkpoints (store or transactions).
    pub fn checkpoints(self) -> bool {
        !matches!(self, DeliveryMode::Uncheckpointed { .. })
    }

    /// Whether the checkpoint store is the source of truth.
    pub fn uses_store(self) -> bool {
        matches!(self, DeliveryMode::Checkpointed { .. })
    }

    /// Whether output goes through per-worker transactions.
    pub fn transactional(self) -> bool {
        self == DeliveryMode::Transactional
    }

    /// Whether librdkafka auto-commits the offsets of delivered output.
    pub fn auto_commit(self) -> bool {
        self == DeliveryMode::Uncheckpointed { auto_commit: true }
    }

    /// Whether a checkpoint waits for the output before it.
    pub fn flushes_on_checkpoint(self) -> bool {
        self == DeliveryMode::Checkpointed { flush: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(sink: &str, rest: &str) -> DeliveryMode {
        let text = format!(
            "[kafka]\nbootstrap_servers = \"b:9092\"\n[source]\ntopics = [\"in\"]\n[pipeline]\nplugin = \"p.wasm\"\n[sink]\ntopics = [\"out\"]\n{sink}\n{rest}"
        );
        Config::parse(&text, std::path::Path::new("."))
            .unwrap()
            .delivery_mode()
    }

    #[test]
    fn each_combination_has_one_mode() {
        let checkpoints = "[checkpoint]\nenabled = true\n";
        let no_auto = "[kafka.consumer_options]\n\"enable.auto.commit\" = \"false\"\n";
        let cases = [
            ("", "", DeliveryMode::Uncheckpointed { auto_commit: true }),
            (
                "",
                no_auto,
                DeliveryMode::Uncheckpointed { auto_commit: false },
            ),
            ("", checkpoints, DeliveryMode::Checkpointed { flush: true }),
            (
                "semantics = \"none\"",
                checkpoints,
                DeliveryMode::Checkpointed { flush: false },
            ),
            (
                "semantics = \"exactly-once\"",
                checkpoints,
                DeliveryMode::Transactional,
            ),
        ];
        for (sink, rest, want) in cases {
            assert_eq!(mode(sink, rest), want, "{sink} {rest}");
        }
        assert!(DeliveryMode::Transactional.checkpoints());
        assert!(!DeliveryMode::Transactional.uses_store());
        assert!(DeliveryMode::Checkpointed { flush: true }.flushes_on_checkpoint());
    }
}
