//! `switchyard plugin new`: finding the SDK and writing a filter crate that
//! builds on the first try.

use std::path::{Path, PathBuf};

use super::{ToolingError, WASM_TARGET};

/// Where a scaffolded crate finds the SDK.
#[derive(Clone, Debug)]
pub enum SdkSource {
    /// A path to the `sdk/` directory (as written into Cargo.toml).
    Path(String),
    /// A registry version requirement, e.g. `"0.1"`.
    Version(String),
}

impl std::fmt::Display for SdkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkSource::Path(p) => write!(f, "switchyard-sdk at {p}"),
            SdkSource::Version(v) => write!(f, "switchyard-sdk {v} from crates.io"),
        }
    }
}

/// The SDK version a scaffold asks the registry for when no local SDK is
/// found: the one released with this router.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where `switchyard plugin new` points the new crate's SDK dependency,
/// first match wins:
///
/// 1. `explicit` (`--sdk-path`): the `sdk/` directory or its `Cargo.toml`;
///    anything else is [`ToolingError::NotSdk`];
/// 2. an `sdk/` directory beside `starts` or one of their ancestors (the
///    crate's parent directory, the working directory): the checkout the
///    command runs in;
/// 3. the checkout this binary was built from, if it is still there;
/// 4. [`SDK_VERSION`] from the registry.
///
/// Paths are made absolute, so the crate can move within the machine.
///
/// # Errors
/// [`ToolingError::NotSdk`] for a bad `explicit` path.
pub fn find_sdk(explicit: Option<&Path>, starts: &[&Path]) -> Result<SdkSource, ToolingError> {
    if let Some(p) = explicit {
        let dir = if p.file_name().is_some_and(|n| n == "Cargo.toml") {
            p.parent().unwrap_or(Path::new("."))
        } else {
            p
        };
        return if is_sdk(dir) {
            Ok(sdk_path(dir))
        } else {
            Err(ToolingError::NotSdk(p.to_owned()))
        };
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|repo| repo.join("sdk"));
    let candidates = starts
        .iter()
        .filter_map(|s| std::path::absolute(s).ok())
        .flat_map(|s| {
            s.ancestors()
                .map(|a| a.join("sdk"))
                .collect::<Vec<PathBuf>>()
        })
        .chain(built_from);
    Ok(first_sdk(candidates)
        .map(|dir| sdk_path(&dir))
        .unwrap_or_else(|| SdkSource::Version(SDK_VERSION.to_owned())))
}

pub(super) fn first_sdk(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|dir| is_sdk(dir))
}

/// Whether `dir` holds the `switchyard-sdk` package's manifest.
fn is_sdk(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    let Ok(manifest) = text.parse::<toml::Table>() else {
        return false;
    };
    manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        == Some("switchyard-sdk")
}

fn sdk_path(dir: &Path) -> SdkSource {
    let abs = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_owned());
    SdkSource::Path(abs.to_string_lossy().into_owned())
}

fn valid_crate_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The files of a new filter plugin crate named `name`: relative path and
/// contents. The crate builds as it is with
/// `cargo build --release --target wasm32-unknown-unknown`.
///
/// # Errors
/// [`ToolingError::BadName`].
pub fn scaffold(name: &str, sdk: &SdkSource) -> Result<Vec<(PathBuf, String)>, ToolingError> {
    if !valid_crate_name(name) {
        return Err(ToolingError::BadName(name.to_owned()));
    }
    let sdk_dep = match sdk {
        SdkSource::Path(p) => format!("{{ path = {} }}", toml_string(p)),
        SdkSource::Version(v) => toml_string(v),
    };
    let lib = name.replace('-', "_");
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
switchyard-sdk = {sdk_dep}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"

# A plugin is its own workspace, even inside another project's tree.
[workspace]
"#
    );
    let src = format!(
        r##"//! {name}: a Switchyard filter plugin.
//!
//! Build:   cargo build --release --target {WASM_TARGET}
//! Output:  target/{WASM_TARGET}/release/{lib}.wasm
//! Try it:  switchyard plugin test target/{WASM_TARGET}/release/{lib}.wasm \
//!            --config '{{"drop_level":"debug"}}' --input msgs.jsonl

use serde::Deserialize;
use switchyard_sdk::{{Config, Error, Filter, Message, Verdict}};

/// The plugin's `config` table from the router config.
#[derive(Deserialize)]
struct Settings {{
    /// Messages whose `level` attribute equals this are dropped.
    #[serde(default = "default_level")]
    drop_level: String,
}}

fn default_level() -> String {{
    "debug".into()
}}

/// The filter's state: built once per instance from its config.
pub struct Plugin {{
    settings: Settings,
}}

impl Filter for Plugin {{
    fn init(config: &Config<'_>) -> Result<Self, Error> {{
        Ok(Self {{ settings: config.parse()? }})
    }}

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {{
        if msg.attr("level") == Some(self.settings.drop_level.as_str()) {{
            Verdict::Drop
        }} else {{
            Verdict::Keep
        }}
    }}
}}

switchyard_sdk::filter!(Plugin);

#[cfg(test)]
mod tests {{
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    #[test]
    fn drops_the_configured_level() {{
        let mut h = FilterHarness::<Plugin>::new(r#"{{"drop_level":"debug"}}"#).unwrap();
        let msgs = [
            OwnedMessage::new("app.log", "x").attr("level", "debug"),
            OwnedMessage::new("app.log", "x").attr("level", "info"),
        ];
        assert_eq!(h.run(&msgs), [Verdict::Drop, Verdict::Keep]);
    }}
}}
"##
    );
    let sample = concat!(
        r#"{"topic":"app.log","payload":"hello","attributes":{"level":"debug"}}"#,
        "\n",
        r#"{"topic":"app.log","payload":{"msg":"hi"},"attributes":{"level":"info"}}"#,
        "\n"
    );
    Ok(vec![
        (PathBuf::from("Cargo.toml"), cargo),
        (PathBuf::from("src/lib.rs"), src),
        (PathBuf::from("msgs.jsonl"), sample.to_owned()),
        (PathBuf::from(".gitignore"), "/target\n".to_owned()),
    ])
}

fn toml_string(s: &str) -> String {
    // TOML basic strings use JSON-compatible escapes for what paths hold.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Writes [`scaffold`]'s files into `dir/name`, which must not exist.
/// Returns the crate's directory.
///
/// # Errors
/// [`ToolingError::BadName`], [`ToolingError::Exists`], or an I/O error.
pub fn write_scaffold(dir: &Path, name: &str, sdk: &SdkSource) -> Result<PathBuf, ToolingError> {
    let files = scaffold(name, sdk)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ToolingError::Exists(root));
    }
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ToolingError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ToolingError::Io { path, source })?;
    }
    Ok(root)
}

/// What `switchyard plugin new` prints after [`write_scaffold`]: where the
/// crate is, which SDK it uses, and the commands to build and test it.
pub fn next_steps(root: &Path, name: &str, sdk: &SdkSource) -> String {
    let wasm = format!(
        "target/{WASM_TARGET}/release/{}.wasm",
        name.replace('-', "_")
    );
    format!(
        "created filter plugin {name} in {root} ({sdk})

next:
  cd {root}
  cargo test                    # its unit tests, on the host
  switchyard plugin build       # builds {wasm}
  switchyard plugin test {wasm} --config '{{\"drop_level\":\"debug\"}}' --input msgs.jsonl
  switchyard plugin inspect {wasm}
",
        root = root.display(),
    )
}
