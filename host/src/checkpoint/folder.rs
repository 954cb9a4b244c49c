//! Where checkpoint files live: a local directory, or a prefix in an
//! S3-compatible object store (`[checkpoint] directory = "s3://bucket/p"`).
//!
//! A [`StoreLocation`] is decided once from the config; a [`Folder`] is one
//! directory (or key prefix) in it, with the few operations the state files
//! need: list, write, read (whole or a header), delete. Local writes are
//! durable before they return (temp file, fsync, rename, directory fsync);
//! an object-store put is atomic and durable when it returns.
//!
//! Object-store calls are async; the callers are worker threads and
//! start-up code that are not. They run on one small runtime of their own,
//! which the caller waits on, so a call from any thread (the job's reactor
//! included) never nests runtimes. Every call is bounded: the client's
//! request timeout and a retry budget (see [`DEFAULT_OPTIONS`]), after
//! which it fails and the checkpoint is retried by the caller.

use super::store::CheckpointError;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Client options set unless `[checkpoint.store_options]` sets them: a
/// store that does not answer fails a request in seconds, not minutes.
const DEFAULT_OPTIONS: &[(&str, &str)] = &[("timeout", "5s"), ("connect_timeout", "2s")];

/// Retries of one request, and the time they may take in all.
const RETRIES: usize = 3;
const RETRY_BUDGET: Duration = Duration::from_secs(10);

/// Where the job's checkpoint files live.
#[derive(Clone)]
pub enum StoreLocation {
    Local(PathBuf),
    Object(ObjectLocation),
}

/// A prefix in an object store: the location's root, or one folder of it.
#[derive(Clone)]
pub struct ObjectLocation {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    /// `s3://bucket/prefix`, for messages.
    url: String,
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Local(p) => write!(f, "{}", p.display()),
            StoreLocation::Object(o) => write!(f, "{}", o.url),
        }
    }
}

/// Whether `directory` names an object store rather than a local path.
pub fn is_url(directory: &Path) -> bool {
    directory.to_str().is_some_and(|s| s.contains("://"))
}

impl StoreLocation {
    /// The location `directory` names: an `s3://` URL (configured by
    /// `options`, e.g. `endpoint`, `region`, `aws_access_key_id`,
    /// `aws_allow_http`; the rest from the `AWS_*` environment), or a
    /// local path (`local`, already resolved against the config's folder).
    pub fn open(
        directory: &Path,
        local: PathBuf,
        options: &BTreeMap<String, String>,
    ) -> Result<StoreLocation, CheckpointError> {
        if !is_url(directory) {
            return Ok(StoreLocation::Local(local));
        }
        let url = directory
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let invalid = |reason: String| CheckpointError::StoreConfig {
            url: url.clone(),
            reason,
        };
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            invalid("only s3:// URLs (S3 and S3-compatible stores) are supported".into())
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket".into()));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: RETRIES,
                retry_timeout: RETRY_BUDGET,
                ..Default::default()
            });
        let defaults = DEFAULT_OPTIONS
            .iter()
            .filter(|(k, _)| !options.contains_key(*k))
            .map(|(k, v)| (k.to_string(), v.to_string()));
        for (k, v) in defaults.chain(options.iter().map(|(k, v)| (k.clone(), v.clone()))) {
            let key = k
                .parse()
                .map_err(|e| invalid(format!("checkpoint.store_options.{k}: {e}")))?;
            builder = builder.with_config(key, v);
        }
        let store = builder.build().map_err(|e| invalid(e.to_string()))?;
        Ok(StoreLocation::Object(ObjectLocation {
            store: Arc::new(store),
            prefix: Key::from(prefix),
            url,
        }))
    }

    /// Checks at start-up that an object store answers and its bucket
    /// exists (one LIST), so that a wrong endpoint, bucket or credential
    /// stops the job at once, within the request budget, naming the URL.
    pub fn probe(&self) -> Result<(), CheckpointError> {
        match self {
            StoreLocation::Local(_) => Ok(()),
            StoreLocation::Object(_) => self.folder(&["eos"])?.list().map(|_| ()),
        }
    }

    /// The folder `parts` joined below the location (created if local).
    pub fn folder(&self, parts: &[&str]) -> Result<Folder, CheckpointError> {
        match self {
            StoreLocation::Local(root) => {
                let dir = parts.iter().fold(root.clone(), |p, part| p.join(part));
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                Ok(Folder::Local(dir))
            }
            StoreLocation::Object(o) => {
                let prefix = parts.iter().fold(o.prefix.clone(), |p, part| p.join(*part));
                Ok(Folder::Object(ObjectLocation {
                    store: o.store.clone(),
                    url: format!("{}/{}", o.url, parts.join("/")),
                    prefix,
                }))
            }
        }
    }
}

/// One folder of checkpoint files.
#[derive(Clone)]
pub enum Folder {
    Local(PathBuf),
    Object(ObjectLocation),
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe("").display())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl Folder {
    /// How file `name` is named in messages (a path or a URL).
    pub fn describe(&self, name: &str) -> PathBuf {
        match self {
            Folder::Local(dir) => dir.join(name),
            Folder::Object(o) => PathBuf::from(format!("{}/{name}", o.url)),
        }
    }

    /// The names of the files in it.
    pub fn list(&self) -> Result<Vec<String>, CheckpointError> {
        match self {
            Folder::Local(dir) => {
                let mut v = Vec::new();
                for e in std::fs::read_dir(dir).map_err(io(dir))? {
                    let e = e.map_err(io(dir))?;
                    v.push(e.file_name().to_string_lossy().into_owned());
                }
                Ok(v)
            }
            Folder::Object(o) => {
                let (store, prefix) = (o.store.clone(), o.prefix.clone());
                let listed = run(async move { store.list_with_delimiter(Some(&prefix)).await })
                    .map_err(|e| o.error("", e))?;
                Ok(listed
                    .objects
                    .iter()
                    .filter_map(|m| m.location.filename().map(str::to_string))
                    .collect())
            }
        }
    }

    /// Writes file `name` whole and durably; `temp` is the name a local
    /// write goes through before it is renamed (never seen by readers).
    pub fn write(&self, name: &str, temp: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        match self {
            Folder::Local(dir) => {
                let tmp = dir.join(temp);
                super::store::write_durably(&tmp, bytes)?;
                let path = dir.join(name);
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))
            }
            Folder::Object(o) => {
                let (store, key) = (o.store.clone(), o.prefix.clone().join(name));
                let payload = PutPayload::from(bytes.to_vec());
                run(async move { store.put(&key, payload).await })
                    .map(|_| ())
                    .map_err(|e| o.error(name, e))
            }
        }
    }

    /// File `name`, or `None` if there is none; with `head`, at most its
    /// first `head` bytes.
    pub fn read(
        &self,
        name: &str,
        head: Option<usize>,
    ) -> Result<Option<Vec<u8>>, CheckpointError> {
        match self {
            Folder::Local(dir) => {
                let path = dir.join(name);
                let read = match head {
                    None => std::fs::read(&path),
                    Some(n) => read_head(&path, n),
                };
                match read {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(&path)(e)),
                }
            }
            Folder::Object(o) => {
                let (store, key) = (o.store.clone(), o.prefix.clone().join(name));
                let got = run(async move {
                    match head {
                        None => store.get(&key).await?.bytes().await,
                        Some(n) => store.get_range(&key, 0..n as u64).await,
                    }
                });
                match got {
                    Ok(b) => Ok(Some(b.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(o.error(name, e)),
                }
            }
        }
    }

    /// Deletes file `name`; one that is not there is no error.
    pub fn delete(&self, name: &str) -> Result<(), CheckpointError> {
        match self {
            Folder::Local(dir) => {
                let path = dir.join(name);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
                    _ => Ok(()),
                }
            }
            Folder::Object(o) => {
                let (store, key) = (o.store.clone(), o.prefix.clone().join(name));
                match run(async move { store.delete(&key).await }) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(o.error(name, e)),
                }
            }
        }
    }
}

impl ObjectLocation {
    fn error(&self, name: &str, cause: object_store::Error) -> CheckpointError {
        CheckpointError::Store {
            url: format!("{}/{name}", self.url),
            cause: Box::new(cause),
        }
    }
}

/// The first `n` bytes of a local file (fewer if it is shorter).
fn read_head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Runs `fut` on the object-store runtime and waits for it.
fn run<T: Send + 'static>(
    fut: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
) -> object_store::Result<T> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-store")
            .enable_all()
            .build()
            .expect("the object-store runtime starts")
    });
    let (done, result) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = done.send(fut.await);
    });
    result.recv().unwrap_or_else(|_| {
        Err(object_store::Error::Generic {
            store: "S3",
            source: "the object-store runtime dropped the call".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str, options: &[(&str, &str)]) -> Result<StoreLocation, CheckpointError> {
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StoreLocation::open(Path::new(url), PathBuf::from("/unused"), &options)
    }

    #[test]
    fn a_path_is_local_and_an_s3_url_is_an_object_store() {
        assert!(matches!(
            StoreLocation::open(Path::new("ck"), PathBuf::from("/job/ck"), &BTreeMap::new()),
            Ok(StoreLocation::Local(p)) if p == Path::new("/job/ck")
        ));
        let s3 = open(
            "s3://bucket/some/prefix/",
            &[("endpoint", "http://127.0.0.1:9")],
        )
        .unwrap();
        assert_eq!(format!("{s3:?}"), "s3://bucket/some/prefix");
        let folder = s3.folder(&["eos", "in-3"]).unwrap();
        assert_eq!(
            folder.describe("x.snap"),
            Path::new("s3://bucket/some/prefix/eos/in-3/x.snap")
        );
    }

    #[test]
    fn bad_urls_and_options_are_named() {
        let message = |url: &str, options: &[(&str, &str)]| match open(url, options) {
            Err(e) => e.to_string(),
            Ok(l) => panic!("{url} opened as {l:?}"),
        };
        let gs = message("gs://bucket/p", &[]);
        assert!(
            gs.contains("gs://bucket/p") && gs.contains("only s3://"),
            "{gs}"
        );
        let nobucket = message("s3:///p", &[]);
        assert!(nobucket.contains("no bucket"), "{nobucket}");
        let option = message("s3://b/p", &[("endpiont", "x")]);
        assert!(
            option.contains("checkpoint.store_options.endpiont"),
            "{option}"
        );
    }

    /// A store that does not answer: a request fails within its bounded
    /// time (connect timeout and retry budget), not never.
    #[test]
    fn an_unreachable_store_fails_in_bounded_time() {
        // Nothing listens on the port of a socket bound and closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let location = open(
            "s3://bucket/p",
            &[
                ("endpoint", &endpoint),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "k"),
                ("aws_secret_access_key", "s"),
                ("region", "us-east-1"),
            ],
        )
        .unwrap();
        let folder = location.folder(&["eos", "in-0"]).unwrap();
        let started = std::time::Instant::now();
        let err = folder.list().unwrap_err().to_string();
        assert!(err.contains("s3://bucket/p/eos/in-0/"), "{err}");
        assert!(
            started.elapsed() < RETRY_BUDGET + Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
