//! `[router]`: the process-wide settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::endpoint::parse_listen;
use super::error::Subject;
use super::raw::RawRouter;
use super::units::serialize_duration;
use super::validate::check_name;

/// The `[router]` section. The whole section may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {
    /// This router's name, shown by `/v1/status` and in logs. Default
    /// `"switchyard"`; same rules as other names. Reloads live.
    pub name: String,
    /// The admin HTTP listener (`/metrics`, `/health`, `/v1/...`), `IP:port`.
    /// Default `127.0.0.1:9464`. Restart required.
    pub admin: SocketAddr,
    /// On SIGTERM or SIGINT, how long queues may drain before the router
    /// exits anyway (what is left is counted and logged). Default 5s; 0s to
    /// 10m. Restart required.
    #[serde(serialize_with = "serialize_duration")]
    pub shutdown_grace: Duration,
    /// Log filter, a level (`"info"`) or `tracing` directives
    /// (`"info,switchyard::zmtp=debug"`). Default none: the `--log-level`
    /// flag or `RUST_LOG` decides, else `info`; the flag and the
    /// environment win over this. Restart required.
    pub log_level: Option<String>,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            name: "switchyard".into(),
            admin: SocketAddr::from(([127, 0, 0, 1], 9464)),
            shutdown_grace: Duration::from_secs(5),
            log_level: None,
        }
    }
}

/// Reads `[router]`.
pub(crate) fn build(raw: &RawRouter, c: &mut Checker<'_>) -> Router {
    let subject = Subject::table("router");
    let d = Router::default();
    let name = match &raw.name {
        Some(n) => match check_name(n.get_ref()) {
            Ok(()) => n.get_ref().clone(),
            Err(reason) => {
                c.invalid(&subject, "name", n.span(), reason);
                d.name
            }
        },
        None => d.name,
    };
    let admin = match &raw.admin {
        Some(a) => parse_listen(a.get_ref()).unwrap_or_else(|reason| {
            c.invalid(&subject, "admin", a.span(), reason);
            d.admin
        }),
        None => d.admin,
    };
    let shutdown_grace = c.duration(
        &subject,
        "shutdown_grace",
        raw.shutdown_grace.as_ref(),
        d.shutdown_grace,
        Duration::ZERO..=Duration::from_secs(600),
    );
    let log_level = raw.log_level.as_ref().and_then(|l| {
        match tracing_subscriber::EnvFilter::builder().parse(l.get_ref()) {
            Ok(_) if !l.get_ref().trim().is_empty() => Some(l.get_ref().clone()),
            Ok(_) => {
                c.invalid(
                    &subject,
                    "log_level",
                    l.span(),
                    "is empty; leave it out for the default",
                );
                None
            }
            Err(e) => {
                c.invalid(
                    &subject,
                    "log_level",
                    l.span(),
                    format!(
                        "{:?} is not a level (error, warn, info, debug, trace) or filter: {e}",
                        l.get_ref()
                    ),
                );
                None
            }
        }
    });
    Router {
        name,
        admin,
        shutdown_grace,
        log_level,
    }
}
