//! Thin binary: parse flags, hand over to the library, exit with its code.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = worker_chart_export::entry::Cli::parse();
    let code = worker_chart_export::entry::main_with(cli).await;
    std::process::exit(code);
}
