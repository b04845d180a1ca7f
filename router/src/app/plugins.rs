//! Loading the config's plugins: one engine, every `[[plugin]]` compiled
//! (or taken from the disk cache) and checked, and each route's use of them
//! checked against their kinds. Problems are config problems, placed at the
//! plugin's `path` line, so `run` and `validate` report them alike.

use std::collections::BTreeMap;
use std::path::Path;

use crate::admin::PluginStats;
use crate::config::{self, Config, ConfigErrors, Problem};
use crate::metrics::Registry;
use crate::pipeline::Stages;
use crate::plugin::{self, Engine, Kind, Plugin, Source, TrapReason};

/// Instance slots kept free beyond what the routes use, so instances can be
/// rebuilt after a trap while the old one is still being dropped.
const SPARE_INSTANCES: u32 = 8;

/// The loaded plugins of one config.
#[derive(Clone)]
pub(crate) struct Plugins {
    /// The one engine, kept across reloads (its metric families are
    /// registered once).
    engine: Option<Engine>,
    /// In config order.
    loaded: Vec<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    plugin: Plugin,
    path: String,
    routes: Vec<String>,
    /// The config entry it was loaded from.
    entry: config::Plugin,
}

/// True when two entries load the same plugin (their line in the file
/// aside).
fn same_entry(a: &config::Plugin, b: &config::Plugin) -> bool {
    a.name == b.name
        && a.path == b.path
        && a.config == b.config
        && a.memory == b.memory
        && a.deadline == b.deadline
        && a.max_batch == b.max_batch
        && a.on_failure == b.on_failure
}

/// Hex SHA-256 of the module at `path`, if it can be read (the load
/// reports it if not).
fn module_sha256(path: &std::path::Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| plugin::module_hash(&bytes))
}

/// Plugin instances the routes of `config` use: one per plugin per route.
fn instances_used(config: &Config) -> usize {
    config
        .routes
        .iter()
        .map(|r| r.filters.len() + usize::from(r.router.is_some()))
        .sum()
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.loaded.iter().map(|l| l.plugin.name()))
            .finish()
    }
}

/// The engine settings for `config`: the cache directory from
/// `[router] plugin_cache`, and room for one instance per plugin per route.
fn engine_config(config: &Config) -> plugin::Config {
    let defaults = plugin::Config::default();
    // Room for a reload: old and new instances coexist while routes switch.
    let needed = u32::try_from(2 * instances_used(config))
        .unwrap_or(u32::MAX)
        .saturating_add(SPARE_INSTANCES);
    plugin::Config {
        cache_dir: config.router.plugin_cache.clone(),
        max_instances: defaults.max_instances.max(needed),
        ..defaults
    }
}

impl Plugins {
    /// Loads every plugin `config` declares and checks the routes' use of
    /// them. Slow (each module is compiled unless cached): call it off the
    /// async runtime. `file` names the config file in problems; the plugin
    /// metric families are registered in `registry`.
    ///
    /// # Errors
    /// Every problem found: an unreadable or invalid module, a wrong ABI,
    /// a config the plugin's `switchyard_init` refuses, a filter that is a
    /// router or the reverse, or an engine that cannot start.
    pub(crate) fn load(
        config: &Config,
        file: &str,
        registry: &Registry,
    ) -> Result<Plugins, ConfigErrors> {
        Self::load_next(None, config, file, registry).map(|(plugins, _)| plugins)
    }

    /// As [`Plugins::load`] for a reload: a plugin whose entry (path,
    /// config, limits) and module bytes are unchanged from `previous` is
    /// kept as it is (no compile; its instances, counters and breaker
    /// carry on), and the engine is `previous`'s. Also returns the names of
    /// plugins whose module was built anew although their entry did not
    /// change (a new build dropped in place).
    ///
    /// # Errors
    /// As [`Plugins::load`], plus a reload needing more plugin instances
    /// than the engine was started with (a restart raises it).
    pub(crate) fn load_next(
        previous: Option<&Plugins>,
        config: &Config,
        file: &str,
        registry: &Registry,
    ) -> Result<(Plugins, Vec<String>), ConfigErrors> {
        let engine = match previous.and_then(|p| p.engine.clone()) {
            Some(engine) => Some(engine),
            None if config.plugins.is_empty() => None,
            None => Some(Engine::new(engine_config(config), registry).map_err(|e| {
                ConfigErrors::from_problems(vec![config.plugins[0].problem(file, e)])
            })?),
        };
        let Some(engine) = engine else {
            return Ok((
                Plugins {
                    engine: None,
                    loaded: Vec::new(),
                },
                Vec::new(),
            ));
        };
        let mut problems: Vec<Problem> = Vec::new();
        let mut loaded = Vec::with_capacity(config.plugins.len());
        let mut rebuilt = Vec::new();
        // Old and new instances coexist while routes switch over.
        let needed = 2 * instances_used(config) + 1;
        let slots = engine.config().max_instances as usize;
        if needed > slots {
            problems.push(config.plugins[0].problem(
                file,
                format!(
                    "the routes need up to {needed} plugin instances during a reload, over the {slots} the plugin engine was started with; restart the router to raise it"
                ),
            ));
        }
        for p in &config.plugins {
            let routes = config
                .routes
                .iter()
                .filter(|r| r.filters.contains(&p.name) || r.router.as_ref() == Some(&p.name))
                .map(|r| r.name.clone())
                .collect();
            let sha = module_sha256(&p.path);
            let before =
                previous.and_then(|prev| prev.loaded.iter().find(|l| l.entry.name == p.name));
            if let (Some(before), Some(sha)) = (before, &sha) {
                if same_entry(&before.entry, p) && before.plugin.sha256() == sha {
                    loaded.push(Loaded {
                        routes,
                        ..before.clone()
                    });
                    continue;
                }
                if same_entry(&before.entry, p) {
                    rebuilt.push(p.name.clone());
                }
            }
            let json = p.config.to_string();
            match engine.load(&p.name, Source::Path(&p.path), &json, p.limits()) {
                Ok(plugin) => loaded.push(Loaded {
                    plugin,
                    path: p.path.display().to_string(),
                    routes,
                    entry: p.clone(),
                }),
                Err(e) => problems.push(p.problem(file, reason(&p.name, &e))),
            }
        }
        let plugins = Plugins {
            engine: Some(engine),
            loaded,
        };
        for route in &config.routes {
            let uses = route
                .filters
                .iter()
                .map(|name| (name, Kind::Filter, "filters"))
                .chain(
                    route
                        .router
                        .iter()
                        .map(|name| (name, Kind::Router, "router")),
                );
            for (name, expected, place) in uses {
                let (Some(plugin), Some(declared)) = (plugins.get(name), config.plugin(name))
                else {
                    continue;
                };
                if plugin.kind() != expected {
                    problems.push(declared.problem(
                        file,
                        format!(
                            "is a {} plugin, but route {:?} uses it in `{place}`, which takes {expected} plugins",
                            plugin.kind(),
                            route.name
                        ),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok((plugins, rebuilt))
        } else {
            Err(ConfigErrors::from_problems(problems))
        }
    }

    /// The module files of the loaded plugins (what a reload watches).
    pub(crate) fn paths(&self) -> Vec<std::path::PathBuf> {
        self.loaded.iter().map(|l| l.entry.path.clone()).collect()
    }

    fn get(&self, name: &str) -> Option<&Plugin> {
        self.loaded
            .iter()
            .map(|l| &l.plugin)
            .find(|p| p.name() == name)
    }

    /// The pipeline's view of `route`'s plugins.
    pub(crate) fn stages(&self, route: &config::Route) -> Stages {
        let found = |name: &String| {
            self.get(name)
                .cloned()
                .expect("Plugins::load checked every plugin a route names")
        };
        Stages {
            filters: route.filters.iter().map(found).collect(),
            router: route.router.as_ref().map(found),
            on_error: route.on_error,
            dead_letter: route.dead_letter.clone(),
            dead_letter_store: false,
        }
    }

    /// How many plugins were loaded.
    pub(crate) fn len(&self) -> usize {
        self.loaded.len()
    }

    /// `/v1/plugins`.
    pub(crate) fn stats(&self) -> Vec<PluginStats> {
        self.loaded
            .iter()
            .map(|l| {
                let p = &l.plugin;
                let limits = p.limits();
                PluginStats {
                    name: p.name().to_owned(),
                    kind: p.kind().to_string(),
                    path: l.path.clone(),
                    sha256: p.sha256().to_owned(),
                    from_cache: p.from_cache(),
                    routes: l.routes.clone(),
                    calls: p.calls(),
                    traps: TrapReason::ALL
                        .iter()
                        .map(|r| (r.as_str().to_owned(), p.traps(*r)))
                        .filter(|(_, n)| *n > 0)
                        .collect::<BTreeMap<_, _>>(),
                    tripped: p.is_tripped(),
                    memory_bytes: limits.memory_bytes,
                    deadline_ms: u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
                    max_batch: limits.max_batch_messages,
                    on_failure: limits.on_failure.mode.to_string(),
                }
            })
            .collect()
    }
}

/// A load error's text without the plugin's name, which the problem
/// already places in front: `cannot read ...`, `switchyard_init failed
/// (code 2): ...`.
fn reason(name: &str, e: &plugin::Error) -> String {
    let text = e.to_string();
    match text.strip_prefix(&format!("plugin {name:?}: ")) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// Loads every plugin of `config` as [`crate::app::App::start`] would, to
/// check them without running (`switchyard validate`); returns how many
/// there are. Slow: compiles each module unless cached.
///
/// # Errors
/// Every problem found, as for a start.
pub fn check_plugins(config: &Config, file: &str) -> Result<usize, ConfigErrors> {
    Plugins::load(config, file, &Registry::new()).map(|p| p.len())
}

/// What `switchyard validate` reports of a config that passed: how much
/// it declares. Displays as `2 inputs, 1 outputs, 3 routes, 0 plugins`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// `[[input]]` entries.
    pub inputs: usize,
    /// `[[output]]` entries.
    pub outputs: usize,
    /// `[[route]]` entries.
    pub routes: usize,
    /// `[[plugin]]` entries, each loaded and its config accepted.
    pub plugins: usize,
    /// What is valid but unsafe ([`Config::security_warnings`]).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for Validated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} inputs, {} outputs, {} routes, {} plugins",
            self.inputs, self.outputs, self.routes, self.plugins
        )
    }
}

/// `switchyard validate`: reads the config file at `path` and loads its
/// plugins as a start would, without binding anything. Slow: compiles
/// each module unless cached.
///
/// # Errors
/// Every problem found, with file and line.
pub fn validate(path: &Path) -> Result<Validated, ConfigErrors> {
    let config = Config::load(path)?;
    let plugins = check_plugins(&config, &path.display().to_string())?;
    Ok(Validated {
        inputs: config.inputs.len(),
        outputs: config.outputs.len(),
        routes: config.routes.len(),
        plugins,
        warnings: config.security_warnings(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginError;

    #[test]
    fn a_trapping_init_is_told_as_such_after_the_plugin_name() {
        let e = plugin::Error::Init {
            plugin: "x".into(),
            call: "switchyard_init",
            source: PluginError::Trap {
                plugin: "x".into(),
                reason: TrapReason::Unreachable,
                detail: "wasm trap: wasm `unreachable` instruction executed".into(),
            },
        };
        assert_eq!(
            reason("x", &e),
            "switchyard_init trapped (unreachable): wasm trap: wasm `unreachable` instruction executed"
        );
    }
}
