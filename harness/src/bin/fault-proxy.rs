//! `fault-proxy`: a reverse proxy with fault rules in front of one dependency. Prints one JSON line with its
//! proxy and admin URLs; rules are added with `--rule` (JSON) or at run time over the admin endpoint.

use clap::Parser;
use harness::proxy::{FaultProxy, Rule, Upstream};

#[derive(Debug, Parser)]
#[command(about = "A fault-injecting reverse proxy (HTTP/1.1 and cleartext HTTP/2 / gRPC)")]
struct Args {
    /// The dependency, host:port.
    #[arg(long)]
    upstream: String,
    /// The upstream speaks cleartext HTTP/2 (gRPC, e.g. the Firestore emulator).
    #[arg(long)]
    http2: bool,
    /// Proxy port on 127.0.0.1 (0 = any).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Admin endpoint port on 127.0.0.1 (0 = any).
    #[arg(long, default_value_t = 0)]
    admin_port: u16,
    /// A rule as JSON, e.g. '{"match":{"pathPrefix":"/upload/"},"action":{"kind":"refuse"},"times":2}'.
    #[arg(long = "rule")]
    rules: Vec<String>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fail = |m: String| -> ! {
        eprintln!("error: {m}");
        std::process::exit(2)
    };
    let mut rules = Vec::new();
    for (i, r) in args.rules.iter().enumerate() {
        match serde_json::from_str::<Rule>(r) {
            Ok(r) => rules.push(r),
            Err(e) => fail(format!("--rule #{}: {e}", i + 1)),
        }
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => fail(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)),
    };
    let protocol = if args.http2 { Upstream::Http2 } else { Upstream::Http1 };
    let proxy = match FaultProxy::with_listener(listener, &args.upstream, protocol) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => fail(format!("{e:#}")),
    };
    for r in rules {
        proxy.add_rule(r);
    }
    let admin = match harness::serve_admin(args.admin_port, proxy.admin_router()).await {
        Ok(a) => a,
        Err(e) => fail(format!("admin endpoint: {e:#}")),
    };
    println!(
        "{}",
        serde_json::json!({"event": "fault_proxy_ready", "proxy": proxy.url(), "admin": format!("http://{admin}")})
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
