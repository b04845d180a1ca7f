//! Harness for the end-to-end tests: starting routers, peers and waits with
//! deadlines.

pub mod router;
