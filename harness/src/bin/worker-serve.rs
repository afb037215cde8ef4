//! `worker-serve [serve]`: the worker's serve entrypoint on 127.0.0.1 (see `harness::serve`).

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(args.is_empty() || args == ["serve"]) {
        eprintln!("usage: worker-serve [serve]   (configuration from the environment, as worker-chart-export serve; HOST defaults to 127.0.0.1)");
        std::process::exit(2);
    }
    std::process::exit(harness::serve::main().await);
}
