//! The error a plugin returns from `init`, and the config it reads.

use std::fmt;

use crate::abi;

/// A plugin's error: an ABI error code (`ABI.md` §6) and a message for the
/// operator. Returned from `init`, it refuses the plugin at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    code: u32,
    message: String,
}

impl Error {
    /// An error of the plugin's own logic (code 1).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: abi::ERROR_PLUGIN,
            message: message.into(),
        }
    }

    /// The config cannot be used (code 2).
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            code: abi::ERROR_CONFIG,
            message: message.into(),
        }
    }

    /// An error with an explicit ABI code.
    pub fn with_code(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The ABI error code.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(feature = "json")]
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::config(e.to_string())
    }
}

/// The plugin's `config` table from the router config, as JSON text.
#[derive(Clone, Copy, Debug)]
pub struct Config<'a> {
    json: &'a str,
}

impl<'a> Config<'a> {
    /// Wraps JSON text (an object; `{}` when the router config has none).
    pub fn new(json: &'a str) -> Self {
        Self { json }
    }

    /// The JSON text.
    pub fn json(&self) -> &'a str {
        self.json
    }

    /// Reads the config into `T` with serde.
    ///
    /// # Errors
    /// A config error (code 2) naming what serde could not read.
    #[cfg(feature = "json")]
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.json).map_err(|e| Error::config(format!("config: {e}")))
    }
}
