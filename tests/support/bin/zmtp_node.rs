//! Placeholder until the ZMTP socket roles land.

fn main() {
    eprintln!("zmtp-node: not built yet");
    std::process::exit(2);
}
