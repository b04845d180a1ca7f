//! Addresses: ZeroMQ endpoints (`tcp://host:port`) to bind or connect, and
//! plain socket addresses (`127.0.0.1:8080`) for HTTP listeners. Parsing
//! never resolves names or touches the network, so `validate` stays
//! side-effect free.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;

/// Where a ZeroMQ input or output attaches: it binds one address and peers
/// connect to it, or it connects out to one or more peers.
///
/// Reloads live: changing it rebuilds the input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attach {
    /// Listen on this address. Written `bind = "tcp://0.0.0.0:5555"`;
    /// `tcp://*:5555` means all IPv4 interfaces; port 0 picks a free port.
    Bind(SocketAddr),
    /// Connect to each of these peers, reconnecting with capped exponential
    /// backoff. Written `connect = "tcp://host:port"` or a list of them.
    Connect(Vec<Endpoint>),
}

impl Attach {
    /// Binds `socket` or connects it to every endpoint, as written;
    /// returns the bound address (port 0 resolved).
    ///
    /// # Errors
    /// A failed bind, or an endpoint the socket refuses.
    pub async fn apply<S: crate::zmtp::endpoint::Attach>(
        &self,
        socket: &S,
    ) -> Result<Option<SocketAddr>, crate::zmtp::endpoint::EndpointError> {
        match self {
            Self::Bind(addr) => socket.bind(&format!("tcp://{addr}")).await.map(Some),
            Self::Connect(endpoints) => {
                for endpoint in endpoints {
                    socket.connect(&endpoint.to_string())?;
                }
                Ok(None)
            }
        }
    }

    /// The address it binds, if it binds.
    pub fn bound(&self) -> Option<SocketAddr> {
        match self {
            Self::Bind(addr) => Some(*addr),
            Self::Connect(_) => None,
        }
    }

    /// How many endpoints it connects to (0 when it binds).
    pub fn endpoints(&self) -> usize {
        match self {
            Self::Bind(_) => 0,
            Self::Connect(list) => list.len(),
        }
    }
}

/// A ZeroMQ TCP endpoint to connect to: `tcp://host:port`. The host is an
/// IP address or a DNS name, resolved when connecting (not when
/// validating).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host as written (an IPv6 address without brackets).
    pub host: String,
    /// The TCP port, 1 to 65535.
    pub port: u16,
}

impl Endpoint {
    /// The address, when the host is an IP literal (no DNS needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `host:port` as a resolver takes it (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}", self.host_port())
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Splits `tcp://host:port` into host (brackets removed) and port text.
fn split_tcp(text: &str) -> Result<(&str, &str), String> {
    let Some(rest) = text.strip_prefix("tcp://") else {
        return Err(match text.split_once("://") {
            Some((scheme, _)) => {
                format!("{text:?}: only tcp:// endpoints are supported, not {scheme}://")
            }
            None => format!("{text:?} is not an endpoint; write \"tcp://host:port\""),
        });
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: `[` without `]` around an IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{text:?} has no port; write \"tcp://host:port\""))?;
        (host, port)
    } else {
        rest.rsplit_once(':')
            .ok_or_else(|| format!("{text:?} has no port; write \"tcp://host:port\""))?
    };
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok((host, port))
}

fn parse_port(text: &str, port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("{text:?}: port {port:?} is not a number from 0 to 65535"))
}

/// Parses a bind endpoint: `tcp://IP:port` or `tcp://*:port`. Port 0 asks
/// the system for a free port.
pub(crate) fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_tcp(text)?;
    let port = parse_port(text, port)?;
    if host == "*" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let ip = host.parse::<IpAddr>().map_err(|_| {
        format!(
            "{text:?}: bind needs an IP address (or `*` for all interfaces), \
             not the name {host:?}"
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses a connect endpoint: `tcp://host:port` with a port from 1.
pub(crate) fn parse_connect(text: &str) -> Result<Endpoint, String> {
    let (host, port) = split_tcp(text)?;
    let port = parse_port(text, port)?;
    if port == 0 {
        return Err(format!("{text:?}: cannot connect to port 0"));
    }
    if host == "*" {
        return Err(format!(
            "{text:?}: `*` means every interface, which only bind can use; \
             connect needs the peer's address"
        ));
    }
    if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        return Err(format!(
            "{text:?}: {host:?} is not an IP address or host name"
        ));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// Parses a listen address: `IP:port` (`[IPv6]:port`). Port 0 asks the
/// system for a free port.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "{text:?}: write an address without {scheme}://, like \"127.0.0.1:8080\""
        ));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{text:?} is not an address; write IP:port, like \"127.0.0.1:8080\" or \"[::1]:8080\""
        )
    })
}

/// A syntactically valid DNS name: dot-separated labels of letters, digits
/// and `-`, none empty or starting or ending with `-`.
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms() {
        assert_eq!(
            parse_bind("tcp://*:5555"),
            Ok("0.0.0.0:5555".parse().expect("addr"))
        );
        assert_eq!(
            parse_bind("tcp://0.0.0.0:0"),
            Ok("0.0.0.0:0".parse().expect("addr"))
        );
        assert_eq!(
            parse_bind("tcp://[::1]:5"),
            Ok("[::1]:5".parse().expect("addr"))
        );
        for bad in [
            "tcp://localhost:5555",
            "ipc:///tmp/x",
            "127.0.0.1:5555",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999",
            "tcp://:5555",
            "tcp://[::1:5",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn connect_forms() {
        let e = parse_connect("tcp://plc-7.site.local:5555").expect("valid");
        assert_eq!(e.to_string(), "tcp://plc-7.site.local:5555");
        assert_eq!(e.socket_addr(), None);
        let e = parse_connect("tcp://[::1]:7").expect("valid");
        assert_eq!(e.to_string(), "tcp://[::1]:7");
        assert_eq!(e.socket_addr(), Some("[::1]:7".parse().expect("addr")));
        for bad in [
            "tcp://*:5555",
            "tcp://host:0",
            "tcp://bad_host:1",
            "tcp://-x:1",
        ] {
            assert!(parse_connect(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn listen_forms() {
        assert!(parse_listen("127.0.0.1:8080").is_ok());
        assert!(parse_listen("[::]:0").is_ok());
        let e = parse_listen("http://127.0.0.1:8080").unwrap_err();
        assert!(e.contains("without http://"), "{e}");
        assert!(parse_listen("localhost:8080").is_err());
    }
}
