//! # relay-netsim: a seeded userspace network impairment for UDP
//!
//! `tc netem` is not available on the machines the benchmark runs on, so the
//! impaired scenarios go through this proxy instead: a client sends to the
//! [`Proxy`], which forwards to the target and carries replies back, each
//! direction through its own [`Impairment`]. Every packet meets these stages
//! in this order:
//!
//! 1. **Loss**: burst loss (per packet, then timed), then independent random loss.
//!    First, because a packet lost on the path never takes a queue slot.
//! 2. **Duplication**: a copy then costs bottleneck time like any packet.
//! 3. **Rate cap** (bits/s) behind a drop-tail queue (bytes or packets): the
//!    bottleneck, fed in arrival order, so queueing delay adds to the path delay.
//! 4. **Delay plus jitter** (uniform in ±jitter): propagation after the
//!    bottleneck. Without `reorder`, a packet never leaves before its
//!    predecessor (its time is raised to the predecessor's), as on most paths.
//!
//! Gilbert–Elliott is a two-state chain stepped per packet: *good* → *bad*
//! with probability p, *bad* → *good* with r, loss probability `loss_good`
//! and `loss_bad` in each. With 0 and 1 (the Gilbert model) bursts average
//! 1/r packets and the mean loss is p / (p + r);
//! [`GilbertElliott::from_mean_loss`] solves for p and r.
//!
//! Because that chain only moves when a packet arrives, a sparse sender
//! (one probe per retransmission timeout) would stay in one burst for
//! seconds, which no real path does; so after [`BURST_MEMORY`] (100 ms)
//! without packets the chain's state is drawn afresh from its stationary
//! distribution. The timed chain, [`TimedBurstLoss`] (`--burst-loss 5% --burst-duration 20ms`),
//! moves with time instead: exponential stays of `mean_burst` in *bad* and
//! of `mean_burst·(1 − p)/p` in *good*, so bursts last as long in time
//! whoever sends, and a paced stream loses p of its packets.
//!
//! The model is pure, in the sans-IO style: [`Impairment::on_packet`] takes
//! the arrival time and length and returns a [`Decision`]. The same seed,
//! configuration and arrivals give the same decisions on every run.
//!
//! ```
//! use relay_netsim::{Decision, DropCause, Impairment, ImpairmentConfig, QueueLimit};
//! use std::time::{Duration, Instant};
//!
//! let ms = Duration::from_millis(1);
//! // 8 Mbit/s (one 1,000-byte packet per ms), a two-packet queue, 20 ms delay.
//! let config = ImpairmentConfig::default().rate(8_000_000, QueueLimit::Packets(2)).delay(20 * ms);
//! let mut link = Impairment::new(config, 1).unwrap();
//! let t0 = Instant::now();
//! assert_eq!(link.on_packet(t0, 1000), Decision::Deliver(t0 + 21 * ms));
//! assert_eq!(link.on_packet(t0, 1000), Decision::Deliver(t0 + 22 * ms));
//! assert_eq!(link.on_packet(t0, 1000), Decision::Drop(DropCause::QueueOverflow));
//! ```
//!
//! The socket side is [`Proxy::start`], in process for tests and
//! benchmarks, or `relay netsim --listen A --to B --loss 2% --delay 20ms`
//! through [`NetsimArgs`] and [`run_cli`].
#![warn(missing_docs)]

mod cli;
mod config;
mod delay_line;
mod impairment;
pub mod parse;
mod proxy;
mod rng;

pub use cli::{Directions, NetsimArgs, run_cli};
pub use config::{
    ConfigError, DEFAULT_BURST_LENGTH, DEFAULT_MAX_IN_FLIGHT, DEFAULT_QUEUE, GilbertElliott,
    ImpairmentConfig, QueueLimit, RateLimit, TimedBurstLoss,
};
pub use delay_line::DelayLine;
pub use impairment::{BURST_MEMORY, Decision, DropCause, DropCounts, Impairment, ImpairmentStats};
pub use proxy::{Direction, DirectionStats, NetsimError, Proxy, ProxyConfig, ProxyStats};
