//! `[router]`: the process-wide settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::endpoint::parse_listen;
use super::error::Subject;
use super::names::check_name;
use super::plugin::resolve_path;
use super::raw::RawRouter;
use super::units::serialize_duration;

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
    /// Directory for compiled plugin modules, so a restart does not compile
    /// every plugin again. Written relative to the config file's directory
    /// (absolute paths are kept); created when missing. Default none: no
    /// disk cache. A cached module is native code, so the directory must be
    /// writable only by the router's user. Restart required.
    pub plugin_cache: Option<PathBuf>,
    /// Directory where durable route queues (`queue = { durable = true }`)
    /// and the dead-letter store live. Written relative to the config
    /// file's directory (absolute paths are kept). One router per
    /// directory: the running router holds it locked. Default none: no
    /// route may be durable. Not reloaded: a reload that changes it is
    /// refused ([`Config::reload_conflict`](super::Config::reload_conflict));
    /// restart to move it.
    pub data_dir: Option<PathBuf>,
    /// The authenticators the admin listener accepts (`[[auth]]` names, or
    /// `"anonymous"`). Required once the file has `[[auth]]` or `[[acl]]`;
    /// then each endpoint needs its scope (`/health` and `/ready` never
    /// do). Default none: the admin listener is open. Reloads live.
    pub admin_auth: Option<Vec<String>>,
    /// Serve `/metrics` to anyone, without the `metrics` scope. Default
    /// false. Reloads live.
    pub metrics_open: bool,
    /// TLS on the admin listener. Default none. The files reload live;
    /// other changes need a restart.
    pub admin_tls: Option<super::ListenerTls>,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            name: "switchyard".into(),
            admin: SocketAddr::from(([127, 0, 0, 1], 9464)),
            shutdown_grace: Duration::from_secs(5),
            log_level: None,
            plugin_cache: None,
            data_dir: None,
            admin_auth: None,
            metrics_open: false,
            admin_tls: None,
        }
    }
}

/// Reads `[router]`.
pub(crate) fn build(raw: &RawRouter, auth_names: &[String], c: &mut Checker<'_>) -> Router {
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
    let log_level = raw
        .log_level
        .as_ref()
        .and_then(|l| match check_log_filter(l.get_ref()) {
            Ok(()) => Some(l.get_ref().clone()),
            Err(reason) => {
                c.invalid(&subject, "log_level", l.span(), reason);
                None
            }
        });
    let plugin_cache = raw.plugin_cache.as_ref().and_then(|p| {
        if p.get_ref().trim().is_empty() {
            c.invalid(
                &subject,
                "plugin_cache",
                p.span(),
                "is empty; leave it out for no disk cache",
            );
            return None;
        }
        Some(resolve_path(c.file(), p.get_ref()))
    });
    let data_dir = raw.data_dir.as_ref().and_then(|p| {
        if p.get_ref().trim().is_empty() {
            c.invalid(
                &subject,
                "data_dir",
                p.span(),
                "is empty; leave it out when no route is durable",
            );
            return None;
        }
        Some(resolve_path(c.file(), p.get_ref()))
    });
    let admin_auth = super::auth::read_list(
        raw.admin_auth.as_ref(),
        "admin_auth",
        &subject,
        auth_names,
        c,
    );
    Router {
        name,
        admin,
        shutdown_grace,
        log_level,
        plugin_cache,
        data_dir,
        admin_auth,
        metrics_open: raw.metrics_open.as_ref().is_some_and(|m| *m.get_ref()),
        admin_tls: raw
            .admin_tls
            .as_ref()
            .and_then(|t| super::tls::build(t, "admin_tls", &subject, c)),
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter: comma-separated directives, each a level or
/// `target=level`. Stricter than `tracing`'s own parser, which reads a
/// misspelt level (`"inof"`) as a target name and so silently logs nothing.
fn check_log_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("is empty; leave it out for the default".into());
    }
    if filter.contains(char::is_whitespace) {
        return Err(format!(
            "{filter:?} contains spaces; write directives like \"info,hyper=warn\""
        ));
    }
    for directive in filter.split(',') {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            Some(_) => directive,
            None if directive.contains("::") || directive.contains('[') => continue,
            None => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} in {filter:?} is not a level; use one of {} (or target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(drop)
        .map_err(|e| format!("{filter:?} is not a valid filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{base, problems};

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "DEBUG",
            "info,switchyard::zmtp=debug",
            "warn,hyper=off",
            "switchyard::zmtp",
        ] {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "inof",
            "info,switchyard=loud",
            "=info",
            "warn, hyper=off",
        ] {
            assert!(check_log_filter(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn router_section_mistakes() {
        let text = format!(
            "[router]\nname = \"\"\nadmin = \"localhost:9464\"\nshutdown_grace = \"1h\"\nlog_level = \"inof\"\n\n{}",
            base("", "", "")
        );
        let got = problems(&text);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].starts_with("t.toml:2:8: [router]: name:"),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with("t.toml:3:9: [router]: admin:"),
            "{got:#?}"
        );
        assert!(
            got[2].contains("shutdown_grace: must be from 0s to 10m, got 1h"),
            "{got:#?}"
        );
        assert!(
            got[3].starts_with("t.toml:5:13: [router]: log_level:"),
            "{got:#?}"
        );
    }

    #[test]
    fn data_dir_is_resolved_like_plugin_cache() {
        let text = format!(
            "[router]\ndata_dir = \"var/switchyard\"\nplugin_cache = \"cache\"\n{}",
            base("", "", "")
        );
        let config = crate::config::Config::parse_with_env(&text, "etc/sy/t.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.router.data_dir,
            Some(PathBuf::from("etc/sy/var/switchyard"))
        );
        assert_eq!(
            config.router.plugin_cache,
            Some(PathBuf::from("etc/sy/cache"))
        );
        let config = crate::config::fixture::valid(&format!(
            "[router]\ndata_dir = \"/srv/switchyard\"\n{}",
            base("", "", "")
        ));
        assert_eq!(
            config.router.data_dir,
            Some(PathBuf::from("/srv/switchyard"))
        );
        let got = problems(&format!("[router]\ndata_dir = \" \"\n{}", base("", "", "")));
        assert!(
            got.len() == 1 && got[0].starts_with("t.toml:2:12: [router]: data_dir: is empty"),
            "{got:#?}"
        );
    }
}
