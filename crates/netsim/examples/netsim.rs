//! The proxy as a stand-alone program, with the flags `relay netsim` takes:
//!
//! ```text
//! cargo run -p relay-netsim --example netsim -- --listen 127.0.0.1:6000 --to 127.0.0.1:5004 \
//!     --loss 2% --delay 20ms --jitter 5ms
//! ```

use std::process::ExitCode;

use clap::Parser;
use relay_netsim::NetsimArgs;

/// Userspace UDP impairment proxy.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    netsim: NetsimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match relay_netsim::run_cli(Cli::parse().netsim).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netsim: {e}");
            ExitCode::FAILURE
        }
    }
}
