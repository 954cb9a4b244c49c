//! A real S3-compatible server for the object-store tests: `moto_server`
//! (PyPI's moto, installed under `target/tools/moto` by `cargo xtask
//! setup`), one per test, on a free port, killed when dropped. It keeps
//! its objects in memory, so a test that takes it away pauses it
//! (SIGSTOP: connections hang, requests time out) rather than stopping it.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Installed by `cargo xtask setup` (its `MOTO_SERVER`).
const MOTO_SERVER: &str = "target/tools/moto/bin/moto_server";

pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    /// The server's request log (one line per request).
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Starts a server and waits until it answers.
    pub fn start() -> anyhow::Result<S3Server> {
        let tool = crate::repo_root().join(MOTO_SERVER);
        if !tool.is_file() {
            bail!("{}: not installed; run `cargo xtask setup`", tool.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(&tool)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen()?)
            .spawn()
            .with_context(|| format!("starting {}", tool.display()))?;
        let server = S3Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let t = Instant::now();
        while server.request("GET", "/").is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("moto_server did not answer on {} within 30 s", server.addr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "moto_server up at {} in {:.1} s",
            server.addr,
            t.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates bucket `name`.
    pub fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let status = self.request("PUT", &format!("/{name}"))?;
        anyhow::ensure!(status == 200, "creating bucket {name}: HTTP {status}");
        Ok(())
    }

    /// The `[checkpoint]` lines of a job whose state lives in `bucket`
    /// under `prefix`.
    pub fn checkpoint_toml(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "directory = \"s3://{bucket}/{prefix}\"\n[checkpoint.store_options]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naws_access_key_id = \"test\"\naws_secret_access_key = \"test\"\naws_allow_http = \"true\"\n",
            self.endpoint()
        )
    }

    /// The keys in `bucket` (up to 1000).
    pub fn keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let body = self.get(&format!("/{bucket}?list-type=2"))?;
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect())
    }

    /// Requests served so far, by kind (`LIST`, or the method) and
    /// status, from the server's request log.
    pub fn requests(&self) -> std::collections::BTreeMap<String, usize> {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let mut by = std::collections::BTreeMap::new();
        for line in text.lines() {
            // werkzeug: `127.0.0.1 - - [date] "PUT /weir/k HTTP/1.1" 200 -`,
            // some of it in terminal colours.
            let mut parts = line.split('\u{1b}');
            let first = parts.next().unwrap_or("").to_string();
            let line = parts.fold(first, |text, p| {
                text + p.split_once('m').map_or(p, |(_, rest)| rest)
            });
            let mut quoted = line.split('"');
            let (Some(request), Some(after)) = (quoted.nth(1), quoted.next()) else {
                continue;
            };
            let mut words = request.split(' ');
            let (Some(method), Some(path)) = (words.next(), words.next()) else {
                continue;
            };
            let kind = if path.contains("list-type") {
                "LIST"
            } else {
                method
            };
            let status = after.split_whitespace().next().unwrap_or("?");
            *by.entry(format!("{kind} {status}")).or_insert(0) += 1;
        }
        by
    }

    /// Stops answering (SIGSTOP), keeping its objects.
    pub fn pause(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Answers again (SIGCONT).
    pub fn resume(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    fn request(&self, method: &str, path: &str) -> anyhow::Result<u16> {
        Ok(self.exchange(method, path)?.0)
    }

    fn get(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = self.exchange("GET", path)?;
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}: {body}");
        Ok(body)
    }

    /// One request without a body (moto needs no signature).
    fn exchange(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let (status, body) = crate::http(self.addr, method, path)?;
        anyhow::ensure!(status != 0, "{method} {path}: no HTTP status line");
        Ok((status, body))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
