//! The ceiling and CPU per byte in the report: measured once per report
//! on the clean network next to the max-rate runs ([`measure`]), judged
//! against their goals ([`targets`]),
//! and shown in their own section ([`section`]).

use std::fmt::Write as _;
use std::time::Duration;

use relay_core::{Mode, Transport};

use super::goals::{Goal, Verdict};
use super::{FLOOD_SIZE, Matrix, ReportConfig};
use crate::ceiling::{Ceiling, DISAGREEMENT_LIMIT, Delivered, Receive, batched, disagreement, iperf3};
use crate::cpu_per_byte::{self, CpuRun};
use crate::scenario::{Scenario, Subject};

const RTP_UDP: Subject = Subject::Link(Transport::RtpUdp, Mode::Unreliable);
const SRTP: Subject = Subject::Link(Transport::RtpUdp, Mode::Srtp);
const QUIC_DGRAM: Subject = Subject::Link(Transport::Quic, Mode::Datagram);
const DC_RELIABLE: Subject = Subject::Link(Transport::Dc, Mode::Reliable);
const DC_UNRELIABLE: Subject = Subject::Link(Transport::Dc, Mode::Unreliable);

/// Runs the ceiling (batched UDP, GSO+GRO, iperf3) and CPU per byte for
/// every selected path that runs in this process (pion's rows are other
/// processes: not measured here). Returns it with the notices of what
/// could not run, for [`Matrix::skipped`].
pub async fn measure(
    config: &ReportConfig,
    clean: &Scenario,
    subjects: &[Subject],
    mut progress: impl FnMut(&str),
) -> (Ceiling, Vec<String>) {
    let mut ceiling = Ceiling::default();
    let mut skipped = Vec::new();
    // At least half a second: the quick report's 0.2 s floods are too
    // short for a batched sender to settle.
    let flood = config.flood.max(Duration::from_millis(500));
    for receive in [Receive::Recvmmsg, Receive::Gro] {
        let r = tokio::task::spawn_blocking(move || batched(receive, FLOOD_SIZE, flood))
            .await
            .unwrap_or_else(|e| Err(format!("the ceiling thread failed: {e}")));
        progress(&match &r {
            Ok(d) => format!(
                "ceiling {:<20} {:>9.0} packets/s, {:>7.1} Mbit/s ({} of {} delivered)",
                receive.label(),
                d.pps(),
                d.bps() / 1e6,
                d.datagrams,
                d.sent
            ),
            Err(e) => format!("ceiling {}: {e}", receive.label()),
        });
        if let Err(e) = &r {
            skipped.push(format!("{}: {e}", receive.label()));
        }
        match receive {
            Receive::Recvmmsg => ceiling.batched = Some(r),
            Receive::Gro => ceiling.gso_gro = Some(r),
        }
    }
    let secs = if config.quick { 1 } else { 2 };
    let r = tokio::task::spawn_blocking(move || iperf3(FLOOD_SIZE, secs))
        .await
        .unwrap_or_else(|e| Err(format!("the iperf3 thread failed: {e}")));
    match &r {
        Ok(d) => progress(&format!(
            "ceiling {:<20} {:>9.0} packets/s, {:>7.1} Mbit/s ({} of {} delivered)",
            "iperf3",
            d.pps(),
            d.bps() / 1e6,
            d.datagrams,
            d.sent
        )),
        Err(e) => {
            let notice = format!("iperf3: {e}");
            progress(&notice);
            skipped.push(notice);
        }
    }
    ceiling.iperf3 = Some(r);

    ceiling.clock = cpu_per_byte::clock();
    let run_time = if config.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    };
    for &subject in subjects.iter().filter(|s| !s.is_pion()) {
        match cpu_per_byte::measure(subject, clean, run_time, config.seed).await {
            Ok(r) => {
                progress(&format!(
                    "cpu/byte {:<20} {:>7.1} Mbit/s delivered, user {:.3} s + system {:.3} s",
                    subject.label(),
                    r.delivered_bps() / 1e6,
                    r.user.as_secs_f64(),
                    r.system.as_secs_f64()
                ));
                ceiling.cpu.push(r);
            }
            Err(e) => {
                let notice = format!("cpu per byte of {}: {e}", subject.label());
                progress(&notice);
                skipped.push(notice);
            }
        }
    }
    (ceiling, skipped)
}

/// The ceiling for `--json`: each ceiling row (`null` when not run, a
/// string when it could not), and each path's CPU run with its cycles per
/// byte, harness excluded.
pub fn to_json(c: &Ceiling) -> serde_json::Value {
    use serde_json::json;
    let row = |r: &Option<Result<Delivered, String>>| match r {
        Some(Ok(d)) => json!({
            "sent": d.sent,
            "delivered": d.datagrams,
            "bytes": d.bytes,
            "time_ms": d.time.as_secs_f64() * 1e3,
            "packets_per_s": d.pps(),
        }),
        Some(Err(e)) => json!(e),
        None => serde_json::Value::Null,
    };
    let raw = c.cpu.iter().find(|r| r.subject == Subject::RawUdp);
    json!({
        "raw_udp_batched": row(&c.batched),
        "raw_udp_gso_gro": row(&c.gso_gro),
        "iperf3": row(&c.iperf3),
        "clock_hz": c.clock.as_ref().map(|k| k.hz),
        "cpu_per_byte": c.cpu.iter().map(|r| json!({
            "subject": r.subject.label(),
            "sent": r.sent,
            "delivered": r.delivered,
            "delivered_bytes": r.delivered_bytes,
            "time_ms": r.time.as_secs_f64() * 1e3,
            "user_ms": r.user.as_secs_f64() * 1e3,
            "system_ms": r.system.as_secs_f64() * 1e3,
            "cycles_per_byte": match (&c.clock, raw) {
                (Some(k), Some(raw)) => Some(r.path_cycles_per_byte(raw, k.hz)),
                _ => None,
            },
        })).collect::<Vec<_>>(),
    })
}

fn ok(r: &Option<Result<Delivered, String>>) -> Option<&Delivered> {
    r.as_ref()?.as_ref().ok()
}

/// Clean max-rate delivered packets/s of `subject` (the report's median
/// run).
fn max_rate_pps(m: &Matrix, subject: Subject) -> Option<f64> {
    m.cell("clean", &m.flood(), subject).map(|r| r.delivered_pps())
}

fn cpu_run(m: &Matrix, subject: Subject) -> Option<&CpuRun> {
    m.ceiling.cpu.iter().find(|r| r.subject == subject)
}

/// `subject`'s cycles per byte at the paced rate, harness excluded.
fn path_cycles(m: &Matrix, subject: Subject) -> Option<f64> {
    let hz = m.ceiling.clock.as_ref()?.hz;
    let raw = cpu_run(m, Subject::RawUdp)?;
    let own = cpu_run(m, subject)?;
    (own.delivered_bytes > 0).then(|| own.path_cycles_per_byte(raw, hz))
}

fn judge(ok: Option<bool>) -> Verdict {
    match ok {
        Some(true) => Verdict::Pass,
        Some(false) => Verdict::Miss,
        None => Verdict::NotRun,
    }
}

/// Issue 13's targets on the ceiling and CPU per byte.
pub fn targets(m: &Matrix) -> Vec<Goal> {
    let mut out = Vec::new();
    let batched = ok(&m.ceiling.batched).map(Delivered::pps);
    for (subject, factor) in [(RTP_UDP, 0.8), (SRTP, 0.6), (QUIC_DGRAM, 0.5)] {
        let (measured, verdict) = match (max_rate_pps(m, subject), batched) {
            (Some(own), Some(ceiling)) if ceiling > 0.0 => (
                format!(
                    "{:.2}x: {own:.0} vs {ceiling:.0} packets/s, clean max-rate",
                    own / ceiling
                ),
                judge(Some(own / ceiling >= factor)),
            ),
            _ => (
                "not run: the path or the ceiling did not run (see the notices above)".into(),
                Verdict::NotRun,
            ),
        };
        out.push(Goal {
            goal: format!(
                "{} >= {factor}x `raw-udp batched` (GSO send, recvmmsg) packets/s in the same run",
                subject.label()
            ),
            measured,
            verdict,
        });
    }
    for subject in [DC_RELIABLE, DC_UNRELIABLE] {
        let (measured, verdict) = match m.sustained_mbps(subject) {
            Some((mbps, share)) => (
                format!(
                    "{:.2} Gbit/s sustained without overload ({:.1}% delivered)",
                    mbps / 1e3,
                    share * 100.0
                ),
                judge(Some(mbps >= 2_000.0)),
            ),
            None => ("not run".into(), Verdict::NotRun),
        };
        out.push(Goal {
            goal: format!("{} >= 2 Gbit/s sustained, 1,200-byte packets", subject.label()),
            measured,
            verdict,
        });
    }
    for (subject, limit) in [
        (RTP_UDP, 3.0),
        (SRTP, 5.0),
        (QUIC_DGRAM, 8.0),
        (DC_RELIABLE, 12.0),
        (DC_UNRELIABLE, 12.0),
    ] {
        let (measured, verdict) = match (path_cycles(m, subject), cpu_run(m, subject)) {
            (Some(c), Some(r)) => (
                format!(
                    "{c:.1} cycles/byte at {:.2} Gbit/s delivered, harness excluded{}",
                    r.delivered_bps() / 1e9,
                    if r.delivered_bps() < 0.95 * cpu_per_byte::RATE_BPS as f64 {
                        " (below the paced rate: the path was overloaded, so this includes overload work)"
                    } else {
                        ""
                    }
                ),
                judge(Some(c <= limit)),
            ),
            _ => ("not run".into(), Verdict::NotRun),
        };
        out.push(Goal {
            goal: format!(
                "{}: <= {limit} cycles/byte at 1 Gbit/s paced, both ends, harness excluded",
                subject.label()
            ),
            measured,
            verdict,
        });
    }
    out
}

fn ratio(own: Option<f64>, base: Option<f64>) -> String {
    match (own, base) {
        (Some(o), Some(b)) if b > 0.0 => format!("{:.2}x", o / b),
        _ => "-".into(),
    }
}

/// The "Ceiling and CPU per byte" section: the ceiling rows, every path's
/// max-rate ratio to them, the iperf3 cross-check, and cycles per byte.
pub fn section(m: &Matrix) -> String {
    let mut md = String::new();
    let c = &m.ceiling;
    if c.batched.is_none() && c.cpu.is_empty() {
        return md;
    }
    let _ = writeln!(md, "## Ceiling and CPU per byte (clean)\n");
    let raw = max_rate_pps(m, Subject::RawUdp);
    let (batched, gro, iperf) = (ok(&c.batched), ok(&c.gso_gro), ok(&c.iperf3));
    if let (Some(raw), Some(i)) = (raw, iperf)
        && let Some(d) = disagreement(raw, i.pps())
        && d > DISAGREEMENT_LIMIT
    {
        let _ = writeln!(
            md,
            "> **FLAGGED:** the harness's per-packet `raw-udp` ({raw:.0} packets/s) and iperf3 ({:.0}) disagree by {:.0}% \
             (more than {:.0}%): the per-packet baseline of this run is not what this machine does with one send per packet.\n",
            i.pps(),
            d * 100.0,
            DISAGREEMENT_LIMIT * 100.0
        );
    }
    let _ = writeln!(
        md,
        "What loopback does with {FLOOD_SIZE}-byte datagrams, measured in this run: one sender thread and one receiver thread, \
         `quinn-udp`; a full socket buffer makes the batched sender wait, not drop. \
         `raw-udp batched`: GSO send (`UDP_SEGMENT`, {} datagrams a call), `recvmmsg` with GRO off. \
         `raw-udp gso+gro`: the same sender, GRO receive (`UDP_GRO`): the best this kernel does from userspace. \
         `iperf3`: `iperf3 -c 127.0.0.1 -u -l {FLOOD_SIZE} -b 0 -w {}K` against `iperf3 -s -1`, one send per packet, \
         with the raw-udp sockets' buffers; the receiver's count. \
         Delivered packets/s, first send to last arrival.\n",
        crate::ceiling::GSO_SEGMENTS,
        relay_core::udp::DEFAULT_SOCKET_BUFFER / 1024
    );
    let _ = writeln!(
        md,
        "| ceiling | packets/s | Mbit/s | delivered | vs per-packet raw-udp |\n|---|---|---|---|---|"
    );
    if let Some(raw) = raw {
        let _ = writeln!(
            md,
            "| raw-udp (per packet, tokio; the max-rate table's row) | {raw:.0} | - | - | 1.00x |"
        );
    }
    for (label, r) in [
        (Receive::Recvmmsg.label(), &c.batched),
        (Receive::Gro.label(), &c.gso_gro),
        ("iperf3", &c.iperf3),
    ] {
        match r {
            Some(Ok(d)) => {
                let _ = writeln!(
                    md,
                    "| {label} | {:.0} | {:.0} | {:.1}% | {} |",
                    d.pps(),
                    d.bps() / 1e6,
                    d.datagrams as f64 * 100.0 / d.sent.max(1) as f64,
                    ratio(Some(d.pps()), raw)
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(md, "| {label} | not run: {e} | | | |");
            }
            None => {}
        }
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "Each path's clean max-rate delivered packets/s against the ceiling \
         (`x raw-udp` is the per-run paired ratio of the max-rate table):\n"
    );
    let _ = writeln!(
        md,
        "| path | packets/s | x raw-udp | x raw-udp batched | x raw-udp gso+gro |\n|---|---|---|---|---|"
    );
    for &subject in m.subjects.iter().filter(|s| **s != Subject::RawUdp) {
        let Some(own) = max_rate_pps(m, subject) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {} | {own:.0} | {} | {} | {} |",
            subject.label(),
            m.paired_ratio(subject)
                .map_or("-".into(), |(r, _)| format!("{r:.2}x")),
            ratio(Some(own), batched.map(Delivered::pps)),
            ratio(Some(own), gro.map(Delivered::pps)),
        );
    }
    md.push('\n');

    if c.cpu.is_empty() {
        return md;
    }
    let raw_cpu = cpu_run(m, Subject::RawUdp);
    let _ = writeln!(
        md,
        "CPU per byte: each path carries {} Gbit/s of {FLOOD_SIZE}-byte RTP packets, paced (an absolute schedule, tokio waking the sender \
         once a millisecond), for {} s. CPU is the process's user + system time over the run (`getrusage`): both link ends live in this process. \
         Clock: {}. The harness's share is the per-packet `raw-udp` run's user time per byte at the same rate (there the only user-space work is \
         the harness's; the sockets' work is system time), subtracted from every row; raw-udp's own row is then the kernel's per-packet UDP cost.\n",
        cpu_per_byte::RATE_BPS as f64 / 1e9,
        if m.config.quick { 1 } else { 2 },
        c.clock.as_ref().map_or(
            "unknown (no `cpu MHz` in /proc/cpuinfo): no cycles".into(),
            |k| format!("{:.0} MHz, {}", k.hz / 1e6, k.source)
        )
    );
    let _ = writeln!(
        md,
        "| path | delivered Mbit/s | delivered | user s | system s | cycles/byte, all | cycles/byte, harness excluded |\n|---|---|---|---|---|---|---|"
    );
    for r in &c.cpu {
        let hz = c.clock.as_ref().map(|k| k.hz);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1}% | {:.3} | {:.3} | {} | {} |",
            r.subject.label(),
            r.delivered_bps() / 1e6,
            r.delivered as f64 * 100.0 / r.sent.max(1) as f64,
            r.user.as_secs_f64(),
            r.system.as_secs_f64(),
            hz.map_or("-".into(), |hz| format!("{:.1}", r.total_cycles_per_byte(hz))),
            match (hz, raw_cpu) {
                (Some(hz), Some(raw)) => format!("{:.1}", r.path_cycles_per_byte(raw, hz)),
                _ => "-".into(),
            }
        );
    }
    if let (Some(k), Some(raw)) = (&c.clock, raw_cpu) {
        let _ = writeln!(
            md,
            "\nHarness share subtracted: {:.1} cycles/byte.",
            raw.harness_cycles_per_byte(k.hz)
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::tests::run;
    use crate::run::RunResult;

    /// A clean max-rate run delivering `pps` packets in one second.
    fn flood(subject: Subject, pps: u64) -> RunResult {
        RunResult {
            workload: crate::workload::Workload::Flood { size: FLOOD_SIZE }.name(),
            flood: true,
            offered: pps,
            delivered: pps,
            delivered_bytes: pps * FLOOD_SIZE as u64,
            ..run("clean", subject, 1)
        }
    }

    fn delivered(pps: u64) -> Option<Result<Delivered, String>> {
        Some(Ok(Delivered {
            sent: pps,
            datagrams: pps,
            bytes: pps * FLOOD_SIZE as u64,
            time: Duration::from_secs(1),
            reordered: 0,
        }))
    }

    fn cpu(subject: Subject, user_ms: u64, system_ms: u64) -> CpuRun {
        CpuRun {
            subject,
            sent: 104_166,
            delivered: 104_166,
            delivered_bytes: 125_000_000,
            time: Duration::from_secs(1),
            user: Duration::from_millis(user_ms),
            system: Duration::from_millis(system_ms),
        }
    }

    fn matrix(iperf3_pps: u64) -> Matrix {
        Matrix {
            config: ReportConfig::quick(),
            subjects: vec![Subject::RawUdp, RTP_UDP, QUIC_DGRAM],
            scenarios: crate::scenario::scenarios().into_iter().take(1).collect(),
            setups: Vec::new(),
            runs: vec![
                flood(Subject::RawUdp, 280_000),
                flood(RTP_UDP, 300_000),
                flood(QUIC_DGRAM, 500_000),
            ],
            failures: Vec::new(),
            skipped: Vec::new(),
            elapsed: Duration::from_secs(1),
            load: ("0".into(), "0".into()),
            sustained: Vec::new(),
            tree: None,
            ceiling: Ceiling {
                batched: delivered(1_000_000),
                gso_gro: delivered(3_000_000),
                iperf3: delivered(iperf3_pps),
                cpu: vec![cpu(Subject::RawUdp, 100, 600), cpu(RTP_UDP, 150, 700)],
                clock: Some(cpu_per_byte::Clock {
                    hz: 2.5e9,
                    source: "test".into(),
                }),
            },
        }
    }

    #[test]
    fn ratios_are_to_the_batched_ceiling_and_the_flag_follows_iperf3() {
        let m = matrix(290_000);
        let goals = targets(&m);
        let rtp = goals
            .iter()
            .find(|g| g.goal.starts_with("rtp-udp unreliable >= 0.8x"))
            .unwrap();
        assert_eq!(rtp.verdict, Verdict::Miss);
        assert!(rtp.measured.starts_with("0.30x"), "{}", rtp.measured);
        let quic = goals
            .iter()
            .find(|g| g.goal.starts_with("quic datagram >= 0.5x"))
            .unwrap();
        assert_eq!(quic.verdict, Verdict::Pass);
        let srtp = goals
            .iter()
            .find(|g| g.goal.starts_with("rtp-udp srtp >= 0.6x"))
            .unwrap();
        assert_eq!(srtp.verdict, Verdict::NotRun);
        // rtp-udp: (850 ms × 2.5 GHz − 100 ms × 2.5 GHz) / 125 MB = 15 cycles a byte.
        let cycles = goals
            .iter()
            .find(|g| g.goal.starts_with("rtp-udp unreliable: <= 3 cycles/byte"))
            .unwrap();
        assert!(
            cycles.measured.starts_with("15.0 cycles/byte"),
            "{}",
            cycles.measured
        );
        assert_eq!(cycles.verdict, Verdict::Miss);

        let md = section(&m);
        assert!(!md.contains("FLAGGED"), "{md}");
        assert!(
            md.contains("| rtp-udp unreliable | 300000 | 1.07x | 0.30x | 0.10x |"),
            "{md}"
        );
        assert!(
            md.contains("| raw-udp batched | 1000000 | 9600 | 100.0% | 3.57x |"),
            "{md}"
        );
        // iperf3 at 200k: the per-packet 280k is 40% above it.
        let md = section(&matrix(200_000));
        assert!(
            md.contains("> **FLAGGED:**") && md.contains("disagree by 40%"),
            "{md}"
        );
    }
}
