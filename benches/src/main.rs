//! `relay-bench report [--quick] [--scenario NAME]... [--path NAME]... [--json FILE]`: runs
//! the scenario matrix and writes `docs/results.md` and
//! `docs/results/*.svg` (and every run as JSON). Progress goes to stderr.
//!
//! `relay-bench links [--count N] [--parallel K] [--transport NAME]...`:
//! opens N idle links of each transport in this process and prints what
//! one holds, the setup rate and what failed first, as markdown.
//!
//! `relay-bench tree [--seconds S] [--transport NAME]... [--hops N] [--receivers N] [--pps N] [--json FILE]`:
//! a chain of `relay` processes and a 1 → N fan-out per transport,
//! latency behind every relay and CPU of every relay, as markdown.

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
        /// Run only this scenario (repeatable: --scenario wan-burst5 --scenario wan-outage;
        /// `--scenario tree`: the relay trees, chains and fan-outs of `relay` processes).
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
        /// Repair modes deliver each SSRC in order, holding packets behind a
        /// loss at most this long (e.g. 100ms; `relay --reorder-window`).
        /// Default: none, repairs are delivered as they arrive.
        #[arg(long, value_name = "DURATION", value_parser = relay::duration::parse_budget)]
        reorder_window: Option<std::time::Duration>,
    },
    /// Opens many idle links of each transport in this process and prints
    /// memory, descriptors and threads per link, setup rate and the first
    /// failure (a markdown table on stdout).
    Links {
        /// Links per transport (two per loopback pair).
        #[arg(long, default_value_t = 1_000)]
        count: usize,
        /// Setups in flight at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Seconds the links sit idle before they are measured.
        #[arg(long, default_value_t = 2.0)]
        idle: f64,
        /// Only this transport (repeatable; default: every compiled one, in its default mode).
        #[arg(long = "transport", value_name = "NAME")]
        transports: Vec<String>,
        /// Print the table's rows only (how the parent process collects
        /// each transport's run from its own child process).
        #[arg(long, hide = true)]
        rows_only: bool,
    },
    /// Relay trees of real `relay` processes on loopback, per transport: a
    /// chain (`relay offer` → N nodes, each `--out` to the harness and
    /// `--forward` to the next) and a fan-out to one and to N receivers.
    /// Prints latency after each hop and each relay's CPU (markdown).
    Tree {
        /// Seconds the harness sends for, per run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Only this transport (repeatable; default: every compiled one), in
        /// its unreliable mode unless given as `TRANSPORT MODE` ("quic stream").
        #[arg(long = "transport", value_name = "NAME")]
        transports: Vec<String>,
        /// Answering relays in the chain.
        #[arg(long, default_value_t = 3)]
        hops: usize,
        /// Answering relays of the wide fan-out (compared with one).
        #[arg(long, default_value_t = 8)]
        receivers: usize,
        /// Send this many packets per second of --size bytes instead of the
        /// report's 2.5 Mbit/s video.
        #[arg(long)]
        pps: Option<u32>,
        /// Packet size with --pps.
        #[arg(long, default_value_t = 1_200)]
        size: usize,
        /// Also write every run as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// `relay-bench tree`: measures, prints the markdown section, writes JSON.
#[allow(clippy::too_many_arguments)]
fn tree(
    seconds: f64,
    transports: &[String],
    hops: usize,
    receivers: usize,
    pps: Option<u32>,
    size: usize,
    json: Option<PathBuf>,
) -> std::process::ExitCode {
    let mut config = relay_bench::tree::TreeConfig {
        duration: std::time::Duration::from_secs_f64(seconds.clamp(0.1, 3600.0)),
        hops,
        receivers,
        ..Default::default()
    };
    if let Some(pps) = pps {
        config.workload = relay_bench::workload::Workload::ConstantRate { size, pps };
    }
    if !transports.is_empty() {
        let mut links = Vec::new();
        for name in transports {
            let mut words = name.split_whitespace();
            let transport = match words.next().unwrap_or_default().parse::<relay_core::Transport>() {
                Ok(t) if relay::compiled_transports().contains(&t) => t,
                _ => {
                    eprintln!(
                        "no such transport: {name}; compiled: {:?}",
                        relay::compiled_transports()
                    );
                    return std::process::ExitCode::FAILURE;
                }
            };
            let mode = match words.next() {
                None => relay_bench::tree::default_links(&[transport])[0].1,
                Some(m) => match m.parse::<relay_core::Mode>() {
                    Ok(m) if transport.modes().contains(&m) => m,
                    _ => {
                        eprintln!("{transport} has no mode {m}; its modes: {:?}", transport.modes());
                        return std::process::ExitCode::FAILURE;
                    }
                },
            };
            links.push((transport, mode));
        }
        config.links = links;
    }
    if hops == 0 {
        eprintln!("--hops must be at least 1");
        return std::process::ExitCode::FAILURE;
    }
    let rows = relay_bench::tree::measure_all(&config, |line| eprintln!("{line}"));
    println!("{}", relay_bench::tree::section(&rows));
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&relay_bench::tree::to_json(&rows)) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("cannot encode the rows as JSON: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    if rows.chains.is_empty() && rows.fan_outs.is_empty() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Runs each transport's links in a child process of its own (this binary,
/// `links --transport NAME --rows-only`): in one process, memory the
/// allocator kept from the previous transport's links would be reused and
/// hide the next one's growth. Prints the whole table.
fn links_each_in_own_process(
    config: &relay_bench::links::LinksConfig,
    transports: &[relay_core::Transport],
) -> std::process::ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program to run each transport on its own: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut table = relay_bench::links::table(&[], config);
    for t in transports {
        // Output is collected after exit; the child bounds itself (every
        // setup has a timeout, every close a one-second wait).
        let out = std::process::Command::new(&exe)
            .args(["links", "--rows-only", "--transport", t.name()])
            .args(["--count", &config.count.to_string()])
            .args(["--parallel", &config.parallel.to_string()])
            .args(["--idle", &config.idle.as_secs_f64().to_string()])
            .stderr(std::process::Stdio::inherit())
            .output();
        match out {
            Ok(o) if o.status.success() => table.push_str(&String::from_utf8_lossy(&o.stdout)),
            Ok(o) => table.push_str(&format!(
                "| {t} | failed: the child process exited with {} | | | | | | | | |\n",
                o.status
            )),
            Err(e) => table.push_str(&format!(
                "| {t} | failed: cannot start the child process: {e} | | | | | | | | |\n"
            )),
        }
    }
    println!("{table}");
    std::process::ExitCode::SUCCESS
}

fn links(
    runtime: &tokio::runtime::Runtime,
    config: relay_bench::links::LinksConfig,
    only: &[String],
    rows_only: bool,
) -> std::process::ExitCode {
    let transports: Vec<relay_core::Transport> = relay::compiled_transports()
        .into_iter()
        .filter(|t| only.is_empty() || only.iter().any(|n| n == t.name()))
        .collect();
    if transports.is_empty() {
        eprintln!(
            "no such transport: {}; compiled: {:?}",
            only.join(", "),
            relay::compiled_transports()
        );
        return std::process::ExitCode::FAILURE;
    }
    if transports.len() > 1 {
        return links_each_in_own_process(&config, &transports);
    }
    let mut results = Vec::new();
    for t in transports {
        eprintln!("links: {} x {t} {}", config.count, t.default_mode());
        let r = runtime.block_on(relay_bench::links::measure(t, t.default_mode(), &config));
        eprintln!(
            "links: {}: {} opened, {:.0} links/s, {:.1} KiB per link{}",
            r.label,
            r.opened,
            r.setup_rate(),
            r.memory_per_link() as f64 / 1024.0,
            r.first_failure
                .as_ref()
                .map_or(String::new(), |(at, why)| format!(", failed after {at}: {why}"))
        );
        results.push(r);
    }
    let table = relay_bench::links::table(&results, &config);
    if rows_only {
        // The header ends at the table's separator line.
        print!(
            "{}",
            table
                .split_once("|---|---|---|---|---|---|---|---|---|---|\n")
                .map_or(table.as_str(), |(_, rows)| rows)
        );
    } else {
        println!("{table}");
    }
    std::process::ExitCode::SUCCESS
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
    let (quick, out, seed, scenarios, paths, json, reorder_window) = match Cli::parse().command {
        Command::Report {
            quick,
            out,
            seed,
            scenarios,
            paths,
            json,
            reorder_window,
        } => (quick, out, seed, scenarios, paths, json, reorder_window),
        Command::Links {
            count,
            parallel,
            idle,
            transports,
            rows_only,
        } => {
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
            let config = relay_bench::links::LinksConfig {
                count,
                parallel,
                idle: std::time::Duration::from_secs_f64(idle.clamp(0.0, 600.0)),
                ..Default::default()
            };
            return links(&runtime, config, &transports, rows_only);
        }
        Command::Tree {
            seconds,
            transports,
            hops,
            receivers,
            pps,
            size,
            json,
        } => return tree(seconds, &transports, hops, receivers, pps, size, json),
    };
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
    if let Some(window) = reorder_window {
        relay_bench::path::set_reorder_window(window);
    }
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
            .chain(reorder_window.map(|w| format!(" --reorder-window {}ms", w.as_millis())))
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
