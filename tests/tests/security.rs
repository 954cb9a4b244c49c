//! Weir against the secured listeners of the test broker (see
//! `weir_e2e::broker`): the running-count job over SASL_SSL with SCRAM
//! (exactly-once, so the transactional producers authenticate too), over
//! mutual TLS, and over SASL_SSL with PLAIN and with OAUTHBEARER, the three
//! blocks the README gives users to copy. And the refusals a user meets
//! first: a wrong password, an untrusted broker certificate, a mechanism the
//! listener does not offer, a missing client certificate, and Kerberos,
//! which this build leaves out. Each fails within its connect timeout with a
//! message that says which.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_e2e::broker::{SASL_PASSWORD, SASL_USER};
use weir_e2e::{
    Broker, counts_by_key, keyed_input, model, repo_root, spawn_weir, topic, wait_for, weir_log,
};

/// The environment variable the SCRAM password comes from.
const PASSWORD_VAR: &str = "WEIR_TEST_SCRAM_PASSWORD";
/// The connect timeout of the refused jobs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A running-count job config from `src` to `dst` over `bootstrap` with the
/// given `[kafka.options]` lines; `extra` opens tables of its own.
fn config(bootstrap: &str, src: &str, dst: &str, options: &str, extra: &str) -> String {
    format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
connect_timeout = "{timeout}s"
[kafka.options]
{options}
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
bounded = true
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
[status]
interval = "0s"
{extra}
"#,
        timeout = CONNECT_TIMEOUT.as_secs(),
        plugins = repo_root().join("plugins").display(),
    )
}

/// `[sink]` for at-least-once output to `dst`.
fn sink(dst: &str) -> String {
    format!("[sink]\ntopics = [\"{dst}\"]\n")
}

/// The SASL_SSL options for `mechanism` with the test CA; the password is
/// written as given (a TOML value).
fn sasl_ssl(broker: &Broker, mechanism: &str, password: &str) -> String {
    format!(
        r#""security.protocol" = "SASL_SSL"
"ssl.ca.location" = "{ca}"
"sasl.mechanism" = "{mechanism}"
"sasl.username" = "{SASL_USER}"
"sasl.password" = {password}
"#,
        ca = broker.pki().ca.display()
    )
}

/// The mutual-TLS options with the given client certificate and key.
fn mtls(broker: &Broker, cert: &Path, key: &Path) -> String {
    format!(
        r#""security.protocol" = "SSL"
"ssl.ca.location" = "{ca}"
"ssl.certificate.location" = "{cert}"
"ssl.key.location" = "{key}"
"#,
        ca = broker.pki().ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// Runs `text` to its end with `WEIR_TEST_SCRAM_PASSWORD` set; returns
/// what it logged (at info).
fn run_ok(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(weir_e2e::weir_binary())
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env("WEIR_LOG", "info")
        .env(PASSWORD_VAR, SASL_PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_for(&mut child, Duration::from_secs(120)).unwrap();
    let log = weir_log(dir.path());
    assert!(status.success(), "the job failed:\n{log}");
    log
}

/// Input on a fresh 2-partition topic; returns (source, sink, input).
fn fresh_topics(broker: &Broker, name: &str, n: usize) -> (String, String, Vec<weir_e2e::Input>) {
    let (src, dst) = (topic(&format!("{name}-in")), topic(&format!("{name}-out")));
    broker.create_topic(&src, 2).unwrap();
    broker.create_topic(&dst, 2).unwrap();
    let input = keyed_input(n, 40, 2);
    broker.produce(&src, &input).unwrap();
    (src, dst, input)
}

/// The output, read back over the plaintext listener, is the model's.
fn assert_counts(broker: &Broker, dst: &str, input: &[weir_e2e::Input], exactly_once: bool) {
    let out = if exactly_once {
        broker.read_committed(dst, 2).unwrap()
    } else {
        broker.read_all(dst, 2).unwrap()
    };
    assert_eq!(counts_by_key(&out), model::expected_counts(input));
}

#[test]
fn exactly_once_over_sasl_ssl_with_scram_and_a_password_from_the_environment() {
    let broker = Broker::shared();
    let (src, dst, input) = fresh_topics(broker, "scram", 5_000);
    let extra = format!(
        r#"[sink]
topics = ["{dst}"]
semantics = "exactly-once"
transactional_id_prefix = "{dst}"
[checkpoint]
enabled = true
interval = "200ms"
directory = "ck"
"#
    );
    let options = sasl_ssl(broker, "SCRAM-SHA-256", &format!("\"${{{PASSWORD_VAR}}}\""));
    let log = run_ok(&config(
        &broker.bootstrap_sasl_ssl(),
        &src,
        &dst,
        &options,
        &extra,
    ));
    assert_counts(broker, &dst, &input, true);
    assert!(
        !log.contains(SASL_PASSWORD),
        "the password was logged:\n{log}"
    );
}

#[test]
fn running_count_over_mutual_tls() {
    let broker = Broker::shared();
    let (src, dst, input) = fresh_topics(broker, "mtls", 5_000);
    let pki = broker.pki();
    let options = mtls(broker, &pki.client_cert, &pki.client_key);
    run_ok(&config(
        &broker.bootstrap_mtls(),
        &src,
        &dst,
        &options,
        &sink(&dst),
    ));
    assert_counts(broker, &dst, &input, false);
}

#[test]
fn running_count_over_sasl_ssl_with_plain_and_with_oauthbearer() {
    let broker = Broker::shared();
    let plain = sasl_ssl(broker, "PLAIN", &format!("\"${{{PASSWORD_VAR}}}\""));
    // librdkafka's unsecured JWT, which Kafka's default validator accepts:
    // the shape of a managed cloud's OAUTHBEARER without its token endpoint.
    let oauth = format!(
        r#""security.protocol" = "SASL_SSL"
"ssl.ca.location" = "{ca}"
"sasl.mechanism" = "OAUTHBEARER"
"enable.sasl.oauthbearer.unsecure.jwt" = "true"
"sasl.oauthbearer.config" = "principal={SASL_USER}"
"#,
        ca = broker.pki().ca.display()
    );
    for (name, options) in [("plain", plain), ("oauth", oauth)] {
        let (src, dst, input) = fresh_topics(broker, name, 1_000);
        run_ok(&config(
            &broker.bootstrap_sasl_ssl(),
            &src,
            &dst,
            &options,
            &sink(&dst),
        ));
        assert_counts(broker, &dst, &input, false);
    }
}

/// Runs a job that must be refused; returns its `error:` line.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let mut child = spawn_weir(&path, dir.path(), "warn");
    let status = wait_for(&mut child, Duration::from_secs(120)).unwrap();
    let took = started.elapsed();
    let log = weir_log(dir.path());
    assert!(!status.success(), "a refused job ran:\n{log}");
    assert!(
        took < CONNECT_TIMEOUT,
        "failed only after {took:?} (connect timeout {CONNECT_TIMEOUT:?}):\n{log}"
    );
    let line = log
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"))
        .to_string();
    println!("refused after {:.1} s: {line}", took.as_secs_f64());
    line
}

#[test]
fn refusals_fail_fast_and_say_which() {
    let broker = Broker::shared();
    let src = topic("refused");
    broker.create_topic(&src, 1).unwrap();
    let pki = broker.pki();
    let sasl = broker.bootstrap_sasl_ssl();
    let cases = [
        (
            "wrong password",
            sasl.clone(),
            sasl_ssl(broker, "SCRAM-SHA-256", "\"not-the-password\""),
            &["SASL authentication failed", "invalid credentials"][..],
        ),
        (
            "mechanism the listener does not offer",
            sasl.clone(),
            sasl_ssl(broker, "SCRAM-SHA-512", &format!("\"{SASL_PASSWORD}\"")),
            &["SASL authentication failed", "Unsupported SASL mechanism"][..],
        ),
        (
            "untrusted broker certificate",
            sasl.clone(),
            sasl_ssl(broker, "SCRAM-SHA-256", &format!("\"{SASL_PASSWORD}\"")).replace(
                &pki.ca.display().to_string(),
                &pki.rogue_ca.display().to_string(),
            ),
            &["TLS handshake failed", "certificate verify failed"][..],
        ),
        (
            "client certificate from another CA",
            broker.bootstrap_mtls(),
            mtls(broker, &pki.rogue_client_cert, &pki.rogue_client_key),
            &["rejected the client certificate"][..],
        ),
        (
            "OIDC (librdkafka without libcurl)",
            sasl.clone(),
            format!(
                r#""security.protocol" = "SASL_SSL"
"ssl.ca.location" = "{ca}"
"sasl.mechanism" = "OAUTHBEARER"
"sasl.oauthbearer.method" = "oidc"
"sasl.oauthbearer.client.id" = "weir-job"
"sasl.oauthbearer.client.secret" = "{SASL_PASSWORD}"
"sasl.oauthbearer.token.endpoint.url" = "http://127.0.0.1:1/token"
"#,
                ca = pki.ca.display()
            ),
            &[
                "OAuth/OIDC depends on libcurl",
                "not supported in this build",
            ][..],
        ),
        (
            "Kerberos",
            sasl.clone(),
            sasl_ssl(broker, "GSSAPI", "\"x\""),
            &["GSSAPI", "Kerberos", "not supported"][..],
        ),
    ];
    for (what, bootstrap, options, expected) in cases {
        let line = refused(&config(&bootstrap, &src, &src, &options, &sink(&src)));
        for e in expected {
            assert!(line.contains(e), "{what}: `{e}` not in: {line}");
        }
        assert!(!line.contains(SASL_PASSWORD), "{what}: password in: {line}");
    }
}
