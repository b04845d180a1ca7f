//! ZeroMQ socket types as carried in the `Socket-Type` property, and the
//! compatibility table of RFC 23 / RFC 37.

use std::fmt;

/// A ZeroMQ socket type, as announced in the READY (or INITIATE) command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// `PAIR`: exclusive pair.
    Pair,
    /// `PUB`: publisher.
    Pub,
    /// `SUB`: subscriber.
    Sub,
    /// `REQ`: request (client).
    Req,
    /// `REP`: reply (service).
    Rep,
    /// `DEALER`: asynchronous request.
    Dealer,
    /// `ROUTER`: asynchronous reply, addressed by routing id.
    Router,
    /// `PULL`: pipeline consumer.
    Pull,
    /// `PUSH`: pipeline producer.
    Push,
    /// `XPUB`: publisher that sees subscriptions.
    XPub,
    /// `XSUB`: subscriber that sends raw subscriptions.
    XSub,
}

impl SocketType {
    /// Every socket type, for tests and table-driven code.
    pub const ALL: [SocketType; 11] = [
        SocketType::Pair,
        SocketType::Pub,
        SocketType::Sub,
        SocketType::Req,
        SocketType::Rep,
        SocketType::Dealer,
        SocketType::Router,
        SocketType::Pull,
        SocketType::Push,
        SocketType::XPub,
        SocketType::XSub,
    ];

    /// The wire name, as sent in the `Socket-Type` property (`"PUB"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Pair => "PAIR",
            SocketType::Pub => "PUB",
            SocketType::Sub => "SUB",
            SocketType::Req => "REQ",
            SocketType::Rep => "REP",
            SocketType::Dealer => "DEALER",
            SocketType::Router => "ROUTER",
            SocketType::Pull => "PULL",
            SocketType::Push => "PUSH",
            SocketType::XPub => "XPUB",
            SocketType::XSub => "XSUB",
        }
    }

    /// Parses a wire name. Names are case-sensitive upper case, as libzmq
    /// sends and compares them; anything else (including draft types such as
    /// `CLIENT`) is `None`.
    pub fn parse(name: &[u8]) -> Option<SocketType> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes() == name)
    }

    /// Whether a socket of this type may talk to a peer of type `peer`
    /// (the table in RFC 23 section "The Socket-Type Property").
    pub fn is_compatible_with(self, peer: SocketType) -> bool {
        use SocketType::*;
        matches!(
            (self, peer),
            (Pair, Pair)
                | (Pub | XPub, Sub | XSub)
                | (Sub | XSub, Pub | XPub)
                | (Req, Rep | Router)
                | (Rep, Req | Dealer)
                | (Dealer, Rep | Dealer | Router)
                | (Router, Req | Dealer | Router)
                | (Push, Pull)
                | (Pull, Push)
        )
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in SocketType::ALL {
            assert_eq!(SocketType::parse(t.as_str().as_bytes()), Some(t));
        }
        assert_eq!(SocketType::parse(b"pub"), None);
        assert_eq!(SocketType::parse(b""), None);
        assert_eq!(SocketType::parse(b"CLIENT"), None);
        assert_eq!(SocketType::parse(b"PUB\0"), None);
    }

    #[test]
    fn compatibility_is_symmetric() {
        for a in SocketType::ALL {
            for b in SocketType::ALL {
                assert_eq!(
                    a.is_compatible_with(b),
                    b.is_compatible_with(a),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn compatibility_table() {
        use SocketType::*;
        let ok = [
            (Pair, Pair),
            (Pub, Sub),
            (Pub, XSub),
            (XPub, Sub),
            (XPub, XSub),
            (Req, Rep),
            (Req, Router),
            (Rep, Dealer),
            (Dealer, Dealer),
            (Dealer, Router),
            (Router, Router),
            (Push, Pull),
        ];
        let mut count = 0;
        for a in SocketType::ALL {
            for b in SocketType::ALL {
                let expected = ok.contains(&(a, b)) || ok.contains(&(b, a));
                assert_eq!(a.is_compatible_with(b), expected, "{a} vs {b}");
                count += usize::from(expected);
            }
        }
        // 12 unordered pairs, of which 3 are symmetric with themselves.
        assert_eq!(count, 21);
    }
}
