//! # relay-bench: the side-by-side comparison sfu-relay exists for
//!
//! Every transport the facade was built with ([`relay::compiled_transports`]),
//! in each of its modes, carries the same RTP workloads as two plain UDP
//! sockets do in the same run, so every figure is also a ratio to what the
//! machine itself can do. Two entry points:
//!
//! - `cargo bench -p relay-bench`: criterion groups `setup`, `throughput`,
//!   `rtt` and micro-benchmarks of the pure parts (RTP classification and
//!   stats, RoQ framing, netsim decisions).
//! - `cargo run --release -p relay-bench -- report [--quick]`: the scenario
//!   matrix (clean, 1% loss, 5% burst loss, 20 ± 5 ms delay, 50 Mbit/s cap)
//!   × every path × video, audio and max-rate workloads, then four WAN
//!   paths of 40 ms RTT (no loss, 1% loss, 5% timed burst loss, a 1 s
//!   outage) with video over several seeds; writes `docs/results.md` and
//!   SVG plots under `docs/results/`. `--scenario NAME` runs only some
//!   scenarios, `--json FILE` writes every run as a row for scripts.
//!
//! The pieces, each with one job:
//!
//! - [`workload`]: pure packet schedules (constant rate, video with
//!   keyframe bursts, audio, flood) and the send-time stamp in each payload.
//! - [`path`]: the two ends of a run, a link pair from [`relay::loopback`],
//!   two raw UDP sockets or a pion relay's UDP ports, with the netsim proxy between them when the
//!   scenario impairs the network.
//! - [`pion`]: the third-party baseline, two pion peers (Go) relaying
//!   UDP through a data channel, built offline from Debian's packages.
//! - [`run`]: one measured run: sender and receiver tasks, latency,
//!   delivery, CPU, memory, kernel and netsim drops.
//! - [`latency`]: HdrHistogram percentiles and CDF points.
//! - [`ceiling`]: what loopback UDP does batched (GSO, GRO) and what
//!   iperf3 does, the honest ceiling of the max-rate figures.
//! - [`cpu_per_byte`]: each path's CPU cost per byte at a fixed rate.
//! - [`links`]: `relay-bench links`, many idle links in one process:
//!   memory, descriptors and threads per link, setup rate, what breaks.
//! - [`outage`]: how a path came back from a black hole (pure).
//! - [`tree`]: `relay-bench tree`, chains and fan-outs of real `relay`
//!   processes: latency after every hop, CPU of every relay.
//! - [`scenario`], [`report`], [`svg`], [`sys`]: the matrix, the markdown
//!   and its plots, and what the machine says about itself.
//!
//! ```
//! use relay_bench::workload::Workload;
//! use std::time::Duration;
//!
//! // One second of 2.5 Mbit/s video: 30 frames, the first a keyframe.
//! let packets: Vec<_> = Workload::Video { bitrate: 2_500_000 }.schedule(Duration::from_secs(1)).collect();
//! assert_eq!(packets.iter().filter(|p| p.marker).count(), 30);
//! assert!(packets[0].keyframe);
//! ```
#![warn(missing_docs)]

pub mod ceiling;
pub mod cpu_per_byte;
pub mod latency;
pub mod links;
pub mod outage;
pub mod path;
pub mod pion;
pub mod report;

pub mod run;
pub mod scenario;

pub mod svg;
pub mod sys;
pub mod tree;
pub mod workload;
