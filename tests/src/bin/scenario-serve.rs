//! The `serve` child of `via: local_eventarc` scenarios: the harness's loopback serve entrypoint, declared here
//! so that `cargo test -p tests` always builds it from the current worker code (`CARGO_BIN_EXE_scenario-serve`).

#[tokio::main]
async fn main() {
    std::process::exit(harness::serve::main().await);
}
