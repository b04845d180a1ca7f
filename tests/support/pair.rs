//! A node and a peer on one endpoint, in either direction.

use crate::Bins;
use crate::node::{Node, NodeConfig};
use crate::peer::PeerConfig;
use crate::process::Proc;
use anyhow::Result;
use std::fmt;

/// Which side binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node binds, the peer connects.
    NodeBinds,
    /// The peer binds, the node connects.
    NodeConnects,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::NodeBinds => "node binds",
            Side::NodeConnects => "node connects",
        })
    }
}

/// The endpoint both sides start from: loopback, any free port.
pub const ANY: &str = "tcp://127.0.0.1:0";

/// Starts `node` and `peer` so that `side` binds and the other connects.
///
/// # Errors
/// When either fails to start.
pub fn start(bins: &Bins, node: NodeConfig, peer: PeerConfig, side: Side) -> Result<(Node, Proc)> {
    Ok(match side {
        Side::NodeBinds => {
            let n = node.bind(ANY).spawn(bins)?;
            let p = peer.connect(&n.endpoint()).spawn(bins)?;
            (n, p)
        }
        Side::NodeConnects => {
            let p = peer.bind(ANY).spawn(bins)?;
            let n = node.connect(&p.endpoint()).spawn(bins)?;
            (n, p)
        }
    })
}
