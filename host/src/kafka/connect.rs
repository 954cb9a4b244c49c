//! The start-up check that the cluster answers and, when it does not, why.
//!
//! librdkafka reports a refused password, an untrusted broker certificate or
//! an unsupported SASL mechanism as a client-level error event, while the
//! metadata request that waits for a broker only times out. So the consumer's
//! context keeps the last such event ([`ClientFaults`]), and [`await_cluster`]
//! asks for metadata in short steps, serving events between them: a refusal
//! ends the check at once with librdkafka's own words, and a timeout says
//! what the last connection attempt saw.

use super::KafkaError;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one metadata request of the check may wait.
const STEP: Duration = Duration::from_millis(250);

/// The last client-level error librdkafka reported.
#[derive(Debug, Default)]
pub struct ClientFaults {
    last: Mutex<Option<ClientFault>>,
}

/// One client-level error: its code and librdkafka's description.
#[derive(Debug, Clone)]
pub struct ClientFault {
    code: Option<RDKafkaErrorCode>,
    reason: String,
}

impl ClientFaults {
    /// Keeps `error` as the last one seen.
    pub fn record(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        // "All brokers down" follows every failed attempt and says nothing
        // the attempt's own error did not.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        let fault = ClientFault {
            code: error.rdkafka_error_code(),
            reason: reason.to_string(),
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    /// The last error seen, if any.
    pub fn last(&self) -> Option<ClientFault> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// No broker answered within the connect timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach Kafka at {servers} within {}s: {cause}{} (check kafka.bootstrap_servers, or raise kafka.connect_timeout)",
    timeout.as_secs_f32(),
    last.as_ref().map(|l| format!("; last error: {l}")).unwrap_or_default()
)]
pub struct Unreachable {
    pub servers: String,
    pub timeout: Duration,
    pub cause: rdkafka::error::KafkaError,
    /// librdkafka's last client-level error, if any.
    pub last: Option<String>,
}

/// What a cluster refused: no retry with the same configuration helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// SASL: wrong credentials, or a mechanism the listener does not offer.
    #[error("SASL authentication failed (check sasl.mechanism, sasl.username and sasl.password)")]
    Authentication,
    /// The broker's certificate was not trusted, or the handshake failed.
    #[error("TLS handshake failed (check ssl.ca.location and the broker's certificate)")]
    Tls,
    /// The broker rejected (or required) the client certificate.
    #[error(
        "the broker rejected the client certificate (check ssl.certificate.location and ssl.key.location)"
    )]
    ClientCertificate,
}

impl ClientFault {
    /// The refusal this error stands for, if it is one.
    fn refusal(&self) -> Option<Refusal> {
        match self.code {
            Some(RDKafkaErrorCode::Authentication) => Some(Refusal::Authentication),
            Some(RDKafkaErrorCode::SSL) => Some(Refusal::Tls),
            // The broker's TLS alert arrives as a failed receive.
            _ if self.reason.contains("alert bad certificate")
                || self.reason.contains("alert certificate required") =>
            {
                Some(Refusal::ClientCertificate)
            }
            _ => None,
        }
    }

    /// librdkafka's description.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Waits until `consumer` gets the cluster's metadata, for at most
/// `timeout`; fails at once when the cluster refuses the connection.
/// `faults` is where the consumer's context records client-level errors.
pub fn await_cluster<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    faults: &ClientFaults,
    servers: &str,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let step = deadline.saturating_duration_since(Instant::now()).min(STEP);
        let cause = match consumer.fetch_metadata(None, step) {
            Ok(_) => return Ok(()),
            Err(cause) => cause,
        };
        // Serves the error events (none is a record: nothing is assigned).
        while consumer.poll(Duration::ZERO).is_some() {}
        let last = faults.last();
        if let Some(fault) = &last
            && let Some(refusal) = fault.refusal()
        {
            return Err(KafkaError::Refused {
                servers: servers.to_string(),
                refusal,
                reason: fault.reason.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Unreachable(Box::new(Unreachable {
                servers: servers.to_string(),
                timeout,
                cause,
                last: last.map(|f| f.reason),
            })));
        }
    }
}

/// Refuses a SASL mechanism this build cannot offer, naming it (librdkafka's
/// own message asks to recompile it).
pub fn check_mechanism(mechanism: Option<&str>) -> Result<(), KafkaError> {
    match mechanism {
        Some(m) if m.eq_ignore_ascii_case("GSSAPI") => Err(KafkaError::Option {
            reason: "`sasl.mechanism = GSSAPI` (Kerberos) is not supported: Weir's librdkafka is \
                     built without libsasl2. Use SCRAM-SHA-256, SCRAM-SHA-512, PLAIN, OAUTHBEARER \
                     or mutual TLS"
                .into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: RDKafkaErrorCode, reason: &str) -> ClientFault {
        ClientFault {
            code: Some(code),
            reason: reason.into(),
        }
    }

    #[test]
    fn refusals_are_told_apart_from_an_unreachable_broker() {
        use RDKafkaErrorCode::*;
        let cases = [
            (
                Authentication,
                "SASL authentication error: invalid credentials",
                Some(Refusal::Authentication),
            ),
            (
                SSL,
                "SSL handshake failed: certificate verify failed",
                Some(Refusal::Tls),
            ),
            (
                BrokerTransportFailure,
                "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate",
                Some(Refusal::ClientCertificate),
            ),
            (
                BrokerTransportFailure,
                "Connect to ipv4#127.0.0.1:1 failed: Connection refused",
                None,
            ),
        ];
        for (code, reason, want) in cases {
            assert_eq!(fault(code, reason).refusal(), want, "{reason}");
        }
    }

    #[test]
    fn all_brokers_down_does_not_hide_the_cause() {
        let faults = ClientFaults::default();
        let global = |c| rdkafka::error::KafkaError::Global(c);
        faults.record(&global(RDKafkaErrorCode::SSL), "SSL handshake failed");
        faults.record(
            &global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(faults.last().unwrap().reason(), "SSL handshake failed");
    }

    #[test]
    fn gssapi_is_refused_by_name() {
        let err = check_mechanism(Some("gssapi")).unwrap_err().to_string();
        assert!(err.contains("GSSAPI") && err.contains("Kerberos"), "{err}");
        assert!(check_mechanism(Some("SCRAM-SHA-512")).is_ok());
        assert!(check_mechanism(None).is_ok());
    }
}
