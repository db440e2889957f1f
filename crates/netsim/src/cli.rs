//! `relay netsim`: the command-line face of the proxy.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::{DEFAULT_BURST_LENGTH, DEFAULT_QUEUE, GilbertElliott, ImpairmentConfig, TimedBurstLoss};
use crate::parse;
use crate::proxy::{DirectionStats, NetsimError, Proxy, ProxyConfig};

/// How often [`run_cli`] logs the counters.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Which directions the flags impair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Directions {
    /// Client → target and target → client alike.
    #[default]
    Both,
    /// Client → target only; replies pass clean.
    Up,
    /// Target → client only.
    Down,
}

/// Flags of `relay netsim`. Each maps onto one [`ImpairmentConfig`] field;
/// values are checked by [`NetsimArgs::into_config`], which names the flag
/// in its errors.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct NetsimArgs {
    /// Address to listen on: the client sends here (e.g. 127.0.0.1:6000).
    #[arg(long)]
    pub listen: String,
    /// The server to forward to (e.g. 127.0.0.1:5004). Its replies go back
    /// to the client that sent last.
    #[arg(long)]
    pub to: String,
    /// Random loss per packet: 2% or 0.02.
    #[arg(long, value_name = "PERCENT")]
    pub loss: Option<String>,
    /// Burst loss with this mean (Gilbert model: packets in a burst are all
    /// lost). Bursts are counted in packets (--burst-length; a burst also
    /// ends after 100 ms without packets) unless --burst-duration gives
    /// them a length in time.
    #[arg(long, value_name = "PERCENT")]
    pub burst_loss: Option<String>,
    /// Mean burst length in packets for --burst-loss [default: 4].
    #[arg(long, value_name = "PACKETS", conflicts_with = "burst_duration")]
    pub burst_length: Option<String>,
    /// Mean burst duration for --burst-loss, e.g. 20ms: bursts follow time,
    /// so a sender that sends rarely is not kept in one for seconds.
    #[arg(long, value_name = "DURATION")]
    pub burst_duration: Option<String>,
    /// Constant one-way delay: 20ms.
    #[arg(long, value_name = "DURATION")]
    pub delay: Option<String>,
    /// Uniform jitter around the delay: 5ms means delay ± 5 ms.
    #[arg(long, value_name = "DURATION")]
    pub jitter: Option<String>,
    /// Let jitter reorder packets (by default a packet never overtakes the one before it).
    #[arg(long)]
    pub reorder: bool,
    /// Rate cap in bits per second: 50mbit, 2.5Mbps, 800kbit.
    #[arg(long, value_name = "RATE")]
    pub rate: Option<String>,
    /// Drop-tail queue in front of --rate: bytes (64kb, 1500b) or packets (100) [default: 64kb].
    #[arg(long, value_name = "SIZE")]
    pub queue: Option<String>,
    /// Duplicate packets: 1% or 0.01.
    #[arg(long, value_name = "PERCENT")]
    pub duplicate: Option<String>,
    /// Seed for every random decision: the same seed and traffic give the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which directions to impair; the other passes clean.
    #[arg(long, value_enum, default_value_t = Directions::Both)]
    pub direction: Directions,
}

impl NetsimArgs {
    /// Checks every flag and builds the proxy configuration.
    ///
    /// ```
    /// use clap::Parser;
    ///
    /// #[derive(Parser)]
    /// struct Cli {
    ///     #[command(flatten)]
    ///     netsim: relay_netsim::NetsimArgs,
    /// }
    ///
    /// let cli = Cli::parse_from([
    ///     "relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:5004", "--loss", "150%",
    /// ]);
    /// assert_eq!(cli.netsim.into_config().unwrap_err(), "--loss 150%: must be between 0% and 100%");
    /// ```
    pub fn into_config(self) -> Result<ProxyConfig, String> {
        let listen = address("--listen", &self.listen)?;
        let target = address("--to", &self.to)?;
        let mut impairment = ImpairmentConfig::default().reorder(self.reorder);
        if let Some(text) = &self.loss {
            impairment.loss = flag("--loss", text, parse::probability(text))?;
        }
        if let Some(text) = &self.duplicate {
            impairment.duplicate = flag("--duplicate", text, parse::probability(text))?;
        }
        let burst_length = match &self.burst_length {
            None => DEFAULT_BURST_LENGTH,
            Some(text) if self.burst_loss.is_none() => {
                return Err(format!("--burst-length {text}: needs --burst-loss"));
            }
            Some(text) => {
                let parsed = text.trim().parse::<f64>().ok().filter(|n| *n >= 1.0);
                flag(
                    "--burst-length",
                    text,
                    parsed.ok_or("must be a number of packets, 1 or more"),
                )?
            }
        };
        let burst_duration = match (&self.burst_duration, &self.burst_loss) {
            (None, _) => None,
            (Some(text), None) => return Err(format!("--burst-duration {text}: needs --burst-loss")),
            (Some(text), Some(_)) => {
                let parsed = parse::duration(text).and_then(|d| {
                    TimedBurstLoss::new(0.0, d)
                        .validate()
                        .map(|()| d)
                        .map_err(|e| e.to_string())
                });
                Some(flag("--burst-duration", text, parsed)?)
            }
        };
        if let Some(text) = &self.burst_loss {
            let mean = flag("--burst-loss", text, parse::probability(text))?;
            match burst_duration {
                Some(duration) => impairment = impairment.timed_burst_loss(mean, duration),
                None => {
                    let chain = GilbertElliott::from_mean_loss(mean, burst_length).map_err(|e| {
                        format!("--burst-loss {text} with mean bursts of {burst_length} packets: {e}")
                    })?;
                    impairment.burst_loss = Some(chain);
                }
            }
        }
        if let Some(text) = &self.delay {
            impairment.delay = flag("--delay", text, parse::duration(text))?;
        }
        if let Some(text) = &self.jitter {
            impairment.jitter = flag("--jitter", text, parse::duration(text))?;
        }
        let queue = match &self.queue {
            Some(text) if self.rate.is_none() => {
                return Err(format!(
                    "--queue {text}: needs --rate (a queue only fills behind a rate cap)"
                ));
            }
            Some(text) => flag("--queue", text, parse::queue(text))?,
            None => DEFAULT_QUEUE,
        };
        if let Some(text) = &self.rate {
            let bits = flag("--rate", text, parse::rate(text))?;
            impairment = impairment.rate(bits, queue);
        }
        impairment.validate().map_err(|e| e.to_string())?;

        let config = ProxyConfig::new(listen, target).seed(self.seed);
        Ok(match self.direction {
            Directions::Both => config.impairment(impairment),
            Directions::Up => config.upstream(impairment),
            Directions::Down => config.downstream(impairment),
        })
    }
}

fn flag<T, E: std::fmt::Display>(name: &str, text: &str, parsed: Result<T, E>) -> Result<T, String> {
    parsed.map_err(|e| format!("{name} {text}: {e}"))
}

fn address(name: &str, text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    // Host names too (localhost:5004), resolved once at start.
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{name} {text}: resolves to no address")),
        Err(_) => Err(format!("{name} {text}: not an address like 127.0.0.1:5004")),
    }
}

/// Runs `relay netsim`: starts the proxy, prints one line
/// `netsim listen=ADDR to=ADDR` on stdout when it is ready (scripts wait for
/// it), logs the counters every 5 seconds with `tracing`, and stops on
/// Ctrl-C or SIGTERM.
pub async fn run_cli(args: NetsimArgs) -> Result<(), NetsimError> {
    let config = args.into_config().map_err(NetsimError::Args)?;
    let target = config.target;
    let upstream = config.upstream.clone();
    let downstream = config.downstream.clone();
    let proxy = Proxy::start(config)?;
    tracing::info!(?upstream, ?downstream, "netsim impairment");
    // The one line of output a script waits for; everything else is logs.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "netsim listen={} to={target}", proxy.local_addr());
    let _ = stdout.flush();
    drop(stdout);

    let stop = stop_signal()?;
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(STATS_INTERVAL);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => log_stats(&proxy),
        }
    }
    log_stats(&proxy);
    proxy.shutdown();
    Ok(())
}

fn log_stats(proxy: &Proxy) {
    let stats = proxy.stats();
    let line = |d: &DirectionStats| {
        format!(
            "received={} delivered={} duplicated={} dropped[random={} burst={} queue={} delay_line={}] \
             send_errors={} in_flight={}",
            d.received,
            d.delivered,
            d.duplicated,
            d.dropped.random_loss,
            d.dropped.burst_loss,
            d.dropped.queue_overflow,
            d.dropped.delay_line_full,
            d.send_errors,
            d.in_flight()
        )
    };
    tracing::info!(
        client = ?stats.client,
        upstream = %line(&stats.upstream),
        downstream = %line(&stats.downstream),
        unroutable = stats.downstream.unroutable,
        "netsim stats"
    );
}

/// Resolves on Ctrl-C or (Unix) SIGTERM. The handlers are installed before
/// this returns, so a signal that comes right after the ready line is caught.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, NetsimError> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(NetsimError::Signal)?;
    let ctrl_c = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueLimit;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        netsim: NetsimArgs,
    }

    fn parse(extra: &[&str]) -> Result<ProxyConfig, String> {
        let mut argv = vec!["relay", "--listen", "127.0.0.1:6000", "--to", "127.0.0.1:5004"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .netsim
            .into_config()
    }

    #[test]
    fn every_flag_maps_onto_the_config() {
        let c = parse(&[
            "--loss",
            "2%",
            "--burst-loss",
            "5%",
            "--burst-length",
            "8",
            "--delay",
            "20ms",
            "--jitter",
            "5ms",
            "--reorder",
            "--rate",
            "50mbit",
            "--queue",
            "100",
            "--duplicate",
            "1%",
            "--seed",
            "42",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.target, "127.0.0.1:5004".parse().unwrap());
        assert_eq!(c.seed, 42);
        let u = &c.upstream;
        assert_eq!(u.loss, 0.02);
        let chain = u.burst_loss.unwrap();
        assert_eq!(chain.p_bad_to_good, 1.0 / 8.0);
        assert!((chain.mean_loss() - 0.05).abs() < 1e-12);
        assert_eq!(u.delay, Duration::from_millis(20));
        assert_eq!(u.jitter, Duration::from_millis(5));
        assert!(u.reorder);
        let rate = u.rate.unwrap();
        assert_eq!(
            (rate.bits_per_second, rate.queue),
            (50_000_000, QueueLimit::Packets(100))
        );
        assert_eq!(u.duplicate, 0.01);
        assert_eq!(c.downstream, c.upstream);
    }

    #[test]
    fn burst_duration_makes_bursts_follow_time() {
        let c = parse(&["--burst-loss", "5%", "--burst-duration", "20ms"]).unwrap();
        assert_eq!(c.upstream.burst_loss, None);
        assert_eq!(
            c.upstream.timed_burst_loss,
            Some(TimedBurstLoss::new(0.05, Duration::from_millis(20)))
        );
        assert_eq!(c.downstream, c.upstream);
        // The per-packet form is unchanged.
        let c = parse(&["--burst-loss", "5%"]).unwrap();
        assert_eq!(c.upstream.timed_burst_loss, None);
        assert!(c.upstream.burst_loss.is_some());
    }

    #[test]
    fn defaults_are_clean_and_documented() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.upstream, ImpairmentConfig::default());
        assert_eq!(c.seed, 0);
        let c = parse(&["--burst-loss", "5%", "--rate", "1mbit"]).unwrap();
        assert_eq!(
            c.upstream.burst_loss.unwrap().p_bad_to_good,
            1.0 / DEFAULT_BURST_LENGTH
        );
        assert_eq!(c.upstream.rate.unwrap().queue, DEFAULT_QUEUE);
    }

    #[test]
    fn one_direction_only() {
        let c = parse(&["--loss", "10%", "--direction", "down"]).unwrap();
        assert_eq!(c.upstream.loss, 0.0);
        assert_eq!(c.downstream.loss, 0.1);
        let c = parse(&["--loss", "10%", "--direction", "up"]).unwrap();
        assert_eq!((c.upstream.loss, c.downstream.loss), (0.1, 0.0));
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        let err = |extra: &[&str]| parse(extra).unwrap_err();
        assert_eq!(
            err(&["--loss", "150%"]),
            "--loss 150%: must be between 0% and 100%"
        );
        assert!(err(&["--delay", "20"]).starts_with("--delay 20: needs a unit"));
        assert!(err(&["--jitter", "soon"]).starts_with("--jitter soon: not a duration"));
        assert!(err(&["--rate", "fast"]).starts_with("--rate fast: not a rate"));
        assert!(err(&["--queue", "64kb"]).starts_with("--queue 64kb: needs --rate"));
        assert!(err(&["--rate", "1mbit", "--queue", "0"]).starts_with("--queue 0: must hold"));
        assert!(err(&["--duplicate", "2"]).starts_with("--duplicate 2: must be between"));
        assert!(err(&["--burst-length", "3"]).starts_with("--burst-length 3: needs --burst-loss"));
        assert!(
            err(&["--burst-loss", "5%", "--burst-length", "0.5"]).starts_with("--burst-length 0.5: must be")
        );
        assert!(err(&["--burst-loss", "90%"]).contains("at most 0.8 mean loss"));
        assert!(err(&["--burst-duration", "20ms"]).starts_with("--burst-duration 20ms: needs --burst-loss"));
        assert!(err(&["--burst-loss", "5%", "--burst-duration", "0"]).starts_with("--burst-duration 0: "));
        assert!(
            err(&["--burst-loss", "5%", "--burst-duration", "20"])
                .starts_with("--burst-duration 20: needs a unit")
        );
        assert!(
            err(&[
                "--burst-loss",
                "5%",
                "--burst-duration",
                "20ms",
                "--burst-length",
                "4"
            ])
            .contains("cannot be used with")
        );
        let mut argv = vec!["relay", "--listen", "nowhere", "--to", "127.0.0.1:5004"];
        let e = Cli::try_parse_from(argv.clone())
            .unwrap()
            .netsim
            .into_config()
            .unwrap_err();
        assert_eq!(e, "--listen nowhere: not an address like 127.0.0.1:5004");
        argv[2] = "localhost:6000";
        assert!(Cli::try_parse_from(argv).unwrap().netsim.into_config().is_ok());
    }
}
