//! The example configs in `config/` (the default one the README runs among
//! them): each must validate, and the default must be what the README says.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("config")
}

/// What the example files need from the environment.
fn example_env(name: &str) -> Option<String> {
    match name {
        "SITE_ID" => Some("42".into()),
        "LINE1_PASSWORD" | "LINE2_PASSWORD" | "UPLINK_PASSWORD" | "NATS_TOKEN" | "HOOK_TOKEN"
        | "HOOK_SECRET" => Some("example".into()),
        _ => None,
    }
}

#[test]
fn every_file_in_config_dir_validates() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable file");
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        // The full path: key files the examples name resolve next to them.
        let file = path.display().to_string();
        if let Err(e) = Config::parse_with_env(&text, &file, &example_env) {
            panic!("config/{name} does not validate:\n{e}");
        }
        checked.push(name);
    }
    assert!(
        checked.len() >= 3,
        "expected the example configs, found {checked:?}"
    );
    assert!(
        checked.iter().any(|n| n == "switchyard.toml"),
        "{checked:?}"
    );
}

#[test]
fn default_config_is_what_the_readme_runs() {
    let config =
        Config::load(config_dir().join("switchyard.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.router.admin, addr("127.0.0.1:9464"));
    let binds: Vec<(String, String)> = config
        .inputs
        .iter()
        .map(|i| {
            let at = match (&i.kind, i.zmq()) {
                (InputKind::Http(h), _) => h.listen.to_string(),
                (_, Some(z)) => format!("{:?}", z.attach),
                (_, None) => String::new(),
            };
            (i.name.clone(), at)
        })
        .collect();
    assert_eq!(
        binds,
        [
            ("sensors".into(), "Bind(127.0.0.1:5555)".into()),
            ("producers".into(), "Bind(127.0.0.1:5556)".into()),
            ("api".into(), "127.0.0.1:8080".into()),
        ]
    );
    assert!(matches!(config.inputs[0].kind, InputKind::ZmqSub(_)));
    assert!(matches!(config.inputs[1].kind, InputKind::ZmqPull(_)));
    let outputs: Vec<_> = config
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.zmq().map(|z| z.attach.clone())))
        .collect();
    assert_eq!(
        outputs,
        [
            ("dashboard", Some(Attach::Bind(addr("127.0.0.1:6555")))),
            ("workers", Some(Attach::Bind(addr("127.0.0.1:6556")))),
        ]
    );
    let telemetry = config.route("telemetry").expect("telemetry route");
    assert_eq!(
        (telemetry.pattern.as_str(), telemetry.to.as_slice()),
        ("sensors.>", &["dashboard".to_owned()][..])
    );
    assert_eq!(telemetry.filters, ["drop-debug"]);
    let plugin = config.plugin("drop-debug").expect("drop-debug plugin");
    assert_eq!(
        plugin.path,
        config_dir().join("../plugins/target/wasm32-unknown-unknown/release/attr_filter.wasm")
    );
    assert_eq!(
        plugin.config,
        serde_json::json!({ "key": "level", "deny": ["debug"] })
    );
    let jobs = config.route("jobs").expect("jobs route");
    assert_eq!(
        (jobs.pattern.as_str(), jobs.to.as_slice()),
        ("jobs.>", &["workers".to_owned()][..])
    );
    assert_eq!(jobs.queue.when_full, WhenFull::Block);
}

#[test]
fn multi_site_needs_its_variables() {
    let text = std::fs::read_to_string(config_dir().join("multi-site.toml")).expect("readable");
    let err = Config::parse_with_env(&text, "config/multi-site.toml", &no_env).unwrap_err();
    let shown = err.to_string();
    for var in [
        "SITE_ID",
        "LINE1_PASSWORD",
        "LINE2_PASSWORD",
        "UPLINK_PASSWORD",
    ] {
        assert!(shown.contains(&format!("`{var}` is not set")), "{shown}");
    }
    let config =
        Config::parse_with_env(&text, "config/multi-site.toml", &example_env).expect("valid");
    assert_eq!(config.router.name, "site-42");
}

#[test]
fn store_and_forward_keeps_the_uplink_on_disk() {
    let config =
        Config::load(config_dir().join("store-and-forward.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.router.data_dir,
        Some(config_dir().join("var/switchyard"))
    );
    let uplink = config.route("uplink").expect("uplink route");
    assert_eq!(uplink.to, ["cloud", "archive"]);
    assert_eq!(
        uplink.queue,
        QueueConfig {
            capacity: 1_000_000,
            max_bytes: 2 << 30,
            when_full: WhenFull::Block,
            block_timeout: QueueConfig::DEFAULT_BLOCK_TIMEOUT,
            durable: Some(Durability {
                max_age: Some(std::time::Duration::from_secs(7 * 86_400)),
                fsync: Fsync::Batch,
                fsync_interval: std::time::Duration::from_millis(10),
            }),
        }
    );
    let live = config.route("live").expect("live route");
    assert_eq!(live.queue.durable, None);
}

#[test]
fn curve_example_reads_its_example_keys() {
    let config = Config::load(config_dir().join("curve.toml")).unwrap_or_else(|e| panic!("{e}"));
    let InputKind::ZmqSub(plant) = &config.inputs[0].kind else {
        panic!("zmq-sub")
    };
    let Some(Curve::Server { clients, .. }) = &plant.options.curve else {
        panic!("a CURVE server")
    };
    assert_eq!(clients.keys().collect::<Vec<_>>(), ["line1", "line2"]);
    let OutputKind::ZmqPush(uplink) = &config.outputs[0].kind else {
        panic!("zmq-push")
    };
    assert!(matches!(uplink.options.curve, Some(Curve::Client { .. })));
}
