//! `relay-bench report [--quick] [--scenario NAME]... [--path NAME]... [--json FILE]`: runs
//! the scenario matrix and writes `docs/results.md` and
//! `docs/results/*.svg` (and every run as JSON). Progress goes to stderr.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use relay_bench::report::{ReportConfig, locked_versions, render, run_matrix, to_json};

#[derive(Parser)]
#[command(name = "relay-bench", about = "sfu-relay benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every scenario x path x workload and writes the report.
    Report {
        /// Short runs (a few minutes): a look, not the committed numbers.
        #[arg(long)]
        quick: bool,
        /// Directory for results.md and results/ (default: the workspace's docs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of the netsim proxies.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run only this scenario (repeatable: --scenario wan-burst5 --scenario wan-outage).
        /// The markdown then covers only what ran; write it outside docs/ with --out.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
        /// Run only this path besides raw UDP (repeatable: a transport, `--path dc`,
        /// or a transport and mode, `--path "quic datagram"`).
        #[arg(long = "path", value_name = "NAME")]
        paths: Vec<String>,
        /// Also write every run as a JSON row (scenario, path, workload, seed,
        /// delivered, latency percentiles, drops by cause, setup time) to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// Crates whose versions the report lists.
const LISTED: &[&str] = &[
    "quinn",
    "quinn-proto",
    "quinn-udp",
    "rustls",
    "tokio",
    "webrtc",
    "rtc",
    "socket2",
    "hdrhistogram",
];

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Report {
        quick,
        out,
        seed,
        scenarios,
        paths,
        json,
    } = Cli::parse().command;
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = out.unwrap_or_else(|| workspace.join("docs"));
    let mut config = if quick {
        ReportConfig::quick()
    } else {
        ReportConfig::full()
    };
    config.seed = seed;
    config.only = scenarios.clone();
    config.paths = paths.clone();
    if let Err(e) = config.selected_scenarios().and(config.selected_subjects()) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let machine = relay_bench::sys::machine();
    eprintln!(
        "relay-bench report{}: {} on {} ({} cores), transports: {:?}",
        if quick { " --quick" } else { "" },
        machine.commit,
        machine.cpu,
        machine.cores,
        relay::compiled_transports()
    );
    let matrix = match runtime.block_on(run_matrix(config, |line| eprintln!("{line}"))) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
    let versions = locked_versions(&lock, LISTED);
    let command = format!(
        "cargo run --release -p relay-bench -- report{}{}",
        if quick { " --quick" } else { "" },
        scenarios
            .iter()
            .map(|s| format!(" --scenario {s}"))
            .chain(paths.iter().map(|p| format!(" --path {p:?}")))
            .collect::<String>()
    );
    let rendered = render(&matrix, &machine, &versions, &command);

    let plots_dir = out.join("results");
    if let Err(e) = std::fs::create_dir_all(&plots_dir) {
        eprintln!("cannot create {}: {e}", plots_dir.display());
        return std::process::ExitCode::FAILURE;
    }
    for (name, svg) in &rendered.plots {
        if let Err(e) = std::fs::write(plots_dir.join(name), svg) {
            eprintln!("cannot write {name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    if let Some(path) = &json {
        let text = match serde_json::to_string_pretty(&to_json(&matrix, &machine)) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("cannot encode the results as JSON: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
        eprintln!("wrote {} ({} runs)", path.display(), matrix.runs.len());
    }
    let md = out.join("results.md");
    if let Err(e) = std::fs::write(&md, &rendered.markdown) {
        eprintln!("cannot write {}: {e}", md.display());
        return std::process::ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {} and {} plots in {:.0} s; {} runs failed",
        md.display(),
        rendered.plots.len(),
        matrix.elapsed.as_secs_f64(),
        matrix.failures.len()
    );
    std::process::ExitCode::SUCCESS
}
