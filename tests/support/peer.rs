//! Peers we did not write: libzmq through pyzmq (`tests/peers/zpeer.py`) and
//! the `zeromq` crate (`zeromq-peer`), with one command line for both.

use crate::Bins;
use crate::process::Proc;
use anyhow::Result;
use std::fmt;

/// Which implementation plays the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// libzmq 4.x through pyzmq.
    Libzmq,
    /// The `zeromq` crate.
    ZeromqCrate,
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerKind::Libzmq => "libzmq",
            PeerKind::ZeromqCrate => "zeromq-crate",
        })
    }
}

/// Both implementations, for tests that run against each.
pub const KINDS: [PeerKind; 2] = [PeerKind::Libzmq, PeerKind::ZeromqCrate];

/// How to start a peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    kind: PeerKind,
    args: Vec<String>,
}

impl PeerConfig {
    /// A peer of `kind` playing `role` (pub, sub, push, pull, req, rep,
    /// dealer, router).
    pub fn new(kind: PeerKind, role: &str) -> Self {
        PeerConfig {
            kind,
            args: vec!["--role".into(), role.into()],
        }
    }

    /// Binds `endpoint` (port 0 picks a free port).
    pub fn bind(self, endpoint: &str) -> Self {
        self.arg("--bind", endpoint)
    }

    /// Connects to `endpoint`.
    pub fn connect(self, endpoint: &str) -> Self {
        self.arg("--connect", endpoint)
    }

    /// Subscribes to `prefix` at start (sub).
    pub fn subscribe(self, prefix: &str) -> Self {
        self.arg("--subscribe", prefix)
    }

    /// Echoes every request (rep, router).
    pub fn echo(mut self) -> Self {
        self.args.push("--echo".into());
        self
    }

    /// A flag without a value (`--plain-server`).
    pub fn flag(mut self, name: &str) -> Self {
        self.args.push(name.into());
        self
    }

    /// Any other option (`--rcvhwm`, `--rcvbuf`, `--identity`, ...).
    pub fn arg(mut self, name: &str, value: impl ToString) -> Self {
        self.args.push(name.into());
        self.args.push(value.to_string());
        self
    }

    /// Starts the peer and waits for its ready line.
    ///
    /// # Errors
    /// When it does not start or get ready in time.
    pub fn spawn(&self, bins: &Bins) -> Result<Proc> {
        let mut cmd = match self.kind {
            PeerKind::Libzmq => {
                let mut c = std::process::Command::new("python3");
                c.arg("-u")
                    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/zpeer.py"));
                c
            }
            PeerKind::ZeromqCrate => std::process::Command::new(bins.zeromq_peer),
        };
        cmd.args(&self.args);
        Proc::spawn(&format!("{} {}", self.kind, self.args.join(" ")), cmd)
    }
}
