//! Tokens for the security tests, minted by PyJWT (`tests/peers/jwt_mint.py`),
//! and the test keys they are signed with (`router/tests/fixtures/auth/`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The directory of the test keys: `jwks.json`, `ec-private.pem`, ...
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../router/tests/fixtures/auth"
    ))
}

/// A test key file by name.
pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// Mints one token per spec (see `jwt_mint.py` for the shape).
///
/// # Errors
/// When python3 or PyJWT is missing (`./dev setup` installs them) or a
/// spec is refused.
pub fn mint(specs: &Value) -> Result<Vec<String>> {
    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/jwt_mint.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 is not installed: run `./dev setup`")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(specs.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named 'jwt'") || err.contains("cryptography") {
            bail!("PyJWT with its crypto backend is not installed: run `./dev setup`\n{err}");
        }
        bail!("jwt_mint.py failed: {err}");
    }
    serde_json::from_slice(&out.stdout).context("jwt_mint.py output")
}

/// SHA-256 of `token` in hex, as a tokens file lists it.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
