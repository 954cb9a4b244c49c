//! `weir new-plugin`: a plugin folder that builds and passes
//! `weir check-plugin --smoke` as created, in Rust, C, AssemblyScript or Go.
//!
//! The templates live in `host/templates/new-plugin/` and are compiled into
//! the binary, so the scaffold works wherever `weir` is installed. The C
//! header and the AssemblyScript helper are copied from `plugin-sdk/`
//! (the very files this binary was built with, ABI constants generated from
//! `plugin-sdk/src/abi.rs`), so a new plugin speaks the host's ABI version.
//! A Rust plugin depends on the SDK crate by path, a Go plugin on the Go
//! SDK module (`plugin-sdk/go`) through a `replace` in its go.mod.
//!
//! Every folder has a `build.sh` that writes `<module>.wasm` into the parent
//! folder (the plugins directory), where `config.toml` names it.

use std::path::{Path, PathBuf};

/// The languages `weir new-plugin` can start a plugin in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust with the `weir-plugin-sdk` crate.
    Rust,
    /// C with `weir_plugin.h`, compiled by clang for wasm32-wasi.
    C,
    /// AssemblyScript with `weir.ts`.
    #[value(name = "assemblyscript", alias = "as")]
    AssemblyScript,
    /// Go 1.24+ with the `weir.dev/weir` SDK, built as a WASI reactor.
    Go,
}

impl Language {
    fn display(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::C => "C",
            Language::AssemblyScript => "AssemblyScript",
            Language::Go => "Go",
        }
    }
}

/// Why a plugin folder could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a crate, C file and module name.
    #[error(
        "invalid plugin name `{0}`: use 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter (e.g. `word-count`)"
    )]
    InvalidName(String),
    /// Refuses to overwrite anything.
    #[error("{0} already exists; choose another name or remove it")]
    Exists(PathBuf),
    /// A Rust or Go plugin needs the SDK's sources.
    #[error("the plugin SDK was not found at {0}; pass --sdk <path to Weir's plugin-sdk folder>")]
    SdkNotFound(PathBuf),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `create` made.
#[derive(Debug)]
pub struct Created {
    /// The new plugin folder.
    pub dir: PathBuf,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// Where `build.sh` puts the module.
    pub module: PathBuf,
}

/// The SDK folder this binary was built from, if it is still there.
pub fn default_sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("plugin-sdk"))
        .unwrap_or_else(|| PathBuf::from("plugin-sdk"))
}

/// Creates `<plugins_dir>/<name>/` with a pass-through plugin in `lang`.
/// `sdk` is the Rust SDK crate's folder (Rust only; default
/// [`default_sdk_dir`]).
pub fn create(
    lang: Language,
    name: &str,
    plugins_dir: &Path,
    sdk: Option<&Path>,
) -> Result<Created, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::InvalidName(name.to_string()));
    }
    let module = name.replace('-', "_");
    let dir = plugins_dir.join(name);
    let module_path = plugins_dir.join(format!("{module}.wasm"));
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    let sdk_dir = match lang {
        Language::Rust | Language::Go => {
            let base = sdk.map(Path::to_path_buf).unwrap_or_else(default_sdk_dir);
            let (sdk, marker) = match lang {
                Language::Go => (base.join("go"), "go.mod"),
                _ => (base, "Cargo.toml"),
            };
            if !sdk.join(marker).is_file() {
                return Err(ScaffoldError::SdkNotFound(sdk));
            }
            Some(std::fs::canonicalize(&sdk).map_err(io(&sdk))?)
        }
        _ => None,
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let abs_dir = std::fs::canonicalize(&dir).map_err(io(&dir))?;
    // Relative inside the SDK's own repository (which may move as a whole),
    // absolute elsewhere.
    let sdk_rel = sdk_dir
        .map(
            |sdk| match sdk.ancestors().find(|a| a.join("plugin-sdk").is_dir()) {
                Some(repo) if abs_dir.starts_with(repo) => {
                    pathdiff::diff_paths(&sdk, &abs_dir).unwrap_or(sdk)
                }
                _ => sdk,
            },
        )
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    let type_name: String = name
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let (language, entry) = match lang {
        Language::Rust => ("Rust", "src/lib.rs"),
        Language::C => ("C", "the .c file's weir_process"),
        Language::AssemblyScript => ("AssemblyScript", "index.ts's weir_process"),
        Language::Go => ("Go", "main.go's Process"),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{module}}", &module)
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &sdk_rel)
            .replace("{{asc_version}}", &assemblyscript_version())
            .replace("{{language}}", language)
            .replace("{{entry}}", entry)
            .replace("{{plugins_dir}}", &plugins_dir.to_string_lossy())
    };
    let c_file = format!("{module}.c");
    let files: Vec<(&str, String, bool)> = match lang {
        Language::Rust => vec![
            ("Cargo.toml", fill(RUST_CARGO), false),
            ("src/lib.rs", fill(RUST_LIB), false),
            ("build.sh", fill(RUST_BUILD), true),
            (".gitignore", fill(RUST_GITIGNORE), false),
        ],
        Language::C => vec![
            (&c_file, fill(C_PLUGIN), false),
            ("weir_plugin.h", C_HEADER.to_string(), false),
            ("build.sh", fill(C_BUILD), true),
        ],
        Language::AssemblyScript => vec![
            ("index.ts", fill(AS_INDEX), false),
            ("weir.ts", AS_HELPER.to_string(), false),
            ("package.json", fill(AS_PACKAGE), false),
            ("build.sh", fill(AS_BUILD), true),
            (".gitignore", fill(AS_GITIGNORE), false),
        ],
        Language::Go => vec![
            ("main.go", fill(GO_MAIN), false),
            ("go.mod", fill(GO_MOD), false),
            ("build.sh", fill(GO_BUILD), true),
        ],
    };
    let mut written = Vec::new();
    for (rel, text, executable) in
        files
            .into_iter()
            .chain(std::iter::once(("README.md", fill(README), false)))
    {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path))?;
        }
        written.push(path);
    }
    tracing::debug!(language = lang.display(), dir = %dir.display(), "plugin scaffold created");
    Ok(Created {
        dir,
        files: written,
        module: module_path,
    })
}

/// A name that works as a Cargo package, a file and a module name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The AssemblyScript compiler version the project pins (and tests with).
fn assemblyscript_version() -> String {
    serde_json::from_str::<serde_json::Value>(AS_PACKAGE_PINNED)
        .ok()
        .and_then(|v| {
            v["devDependencies"]["assemblyscript"]
                .as_str()
                .map(str::to_string)
        })
        .expect("plugin-sdk/assemblyscript/package.json pins assemblyscript")
}

const README: &str = include_str!("../templates/new-plugin/README.md.in");
const RUST_CARGO: &str = include_str!("../templates/new-plugin/rust/Cargo.toml.in");
const RUST_LIB: &str = include_str!("../templates/new-plugin/rust/src/lib.rs.in");
const RUST_BUILD: &str = include_str!("../templates/new-plugin/rust/build.sh.in");
const RUST_GITIGNORE: &str = include_str!("../templates/new-plugin/rust/gitignore.in");
const C_PLUGIN: &str = include_str!("../templates/new-plugin/c/plugin.c.in");
const C_BUILD: &str = include_str!("../templates/new-plugin/c/build.sh.in");
const C_HEADER: &str = include_str!("../../plugin-sdk/c/weir_plugin.h");
const AS_INDEX: &str = include_str!("../templates/new-plugin/assemblyscript/index.ts.in");
const AS_PACKAGE: &str = include_str!("../templates/new-plugin/assemblyscript/package.json.in");
const AS_BUILD: &str = include_str!("../templates/new-plugin/assemblyscript/build.sh.in");
const AS_GITIGNORE: &str = include_str!("../templates/new-plugin/assemblyscript/gitignore.in");
const AS_HELPER: &str = include_str!("../../plugin-sdk/assemblyscript/weir.ts");
const GO_MAIN: &str = include_str!("../templates/new-plugin/go/main.go.in");
const GO_MOD: &str = include_str!("../templates/new-plugin/go/go.mod.in");
const GO_BUILD: &str = include_str!("../templates/new-plugin/go/build.sh.in");
const AS_PACKAGE_PINNED: &str = include_str!("../../plugin-sdk/assemblyscript/package.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "word-count", "dedup_2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Word", "2x", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn refuses_to_overwrite_and_fills_every_placeholder() {
        let tmp = tempfile::tempdir().unwrap();
        for lang in [
            Language::Rust,
            Language::C,
            Language::AssemblyScript,
            Language::Go,
        ] {
            let name = format!("my-{}", lang.display().to_lowercase());
            let created = create(lang, &name, tmp.path(), None).unwrap();
            for f in &created.files {
                let text = std::fs::read_to_string(f).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{}: unfilled placeholder",
                    f.display()
                );
            }
            assert!(matches!(
                create(lang, &name, tmp.path(), None),
                Err(ScaffoldError::Exists(_))
            ));
        }
        assert!(matches!(
            create(Language::C, "Bad", tmp.path(), None),
            Err(ScaffoldError::InvalidName(_))
        ));
        assert!(matches!(
            create(Language::Rust, "x", tmp.path(), Some(tmp.path())),
            Err(ScaffoldError::SdkNotFound(_))
        ));
    }
}
