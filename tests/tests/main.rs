//! The end-to-end suites, linked into one test binary (`e2e`): one module
//! per suite (the table in `tests/README.md` says what each covers). One
//! binary links the router library and wasmtime once instead of once per
//! suite, and builds the plugin fixtures once per run.
//!
//! Run one suite with a filter: `cargo test -p switchyard-tests --test e2e
//! slow_subscriber::` (a module's tests all start with its name and `::`;
//! the filter is a substring, so `hostile::` also matches
//! `router_plugins_hostile::`).
//!
//! Every suite shares this process with the others, so none may change
//! process-wide state (environment, working directory, signal handlers,
//! fixed ports): each starts its routers and peers as child processes on
//! `127.0.0.1:0` ports, in temp dirs of their own.

mod curve;
mod hostile;
mod hostile_roles;
mod interop;
mod liveness;
mod peers;
mod plain;
mod reconnect;
mod router_curve;
mod router_dead_letters;
mod router_jetstream;
mod router_jetstream_input;
mod router_lanes;
mod router_metrics;
mod router_nats;
mod router_plugins;
mod router_plugins_hostile;
mod router_plugins_refused;
mod router_pubsub;
mod router_queue;
mod router_reload;
mod router_reload_edits;
mod router_requests;
mod router_routing;
mod router_security;
mod router_shutdown;
mod router_store;
mod router_tls;
mod router_webhook;
mod slow_subscriber;
