//! The `switchyard` binary.

fn main() {
    println!("switchyard {}", env!("CARGO_PKG_VERSION"));
}
