//! What the process and the machine say about themselves: CPU time
//! (getrusage), resident memory (/proc/self/status), and the machine and
//! toolchain a report was made on.

use std::process::Command;
use std::time::Duration;

/// User plus system CPU time of the whole process so far
/// (`getrusage(RUSAGE_SELF)`: every thread, the netsim proxy's included).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid
    // `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a live, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory now and its peak, in bytes (`VmRSS`, `VmHWM`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set now.
    pub rss: u64,
    /// Peak resident set since start or the last [`reset_peak`].
    pub peak: u64,
}

/// Reads `VmRSS` and `VmHWM` from /proc/self/status (zeros elsewhere).
pub fn memory() -> Memory {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

fn parse_status(text: &str) -> Memory {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |v| v * 1024)
    };
    Memory {
        rss: kib("VmRSS:"),
        peak: kib("VmHWM:"),
    }
}

/// User plus system CPU time of another process (a helper the harness
/// started, such as the pion relay), from `/proc/PID/stat`; `None` once it
/// is gone or off Linux.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_stat_cpu(&stat, u64::try_from(ticks).ok().filter(|&t| t > 0)?)
}

/// utime + stime (fields 14 and 15 of proc(5)'s stat) in `ticks` per
/// second. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted after its last `)`.
fn parse_stat_cpu(stat: &str, ticks: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks as f64))
}

/// CPU time another process's threads have run so far, in nanoseconds
/// (the first field of each `/proc/PID/task/TID/schedstat`, summed): the
/// scheduler's own accounting, exact where [`process_cpu_time`] counts
/// 10 ms clock ticks (a relay forwarding a 2.5 Mbit/s stream uses a few
/// ticks a second). Threads that exited are no longer listed, so measure
/// processes whose threads live for the whole run (a tokio runtime's
/// workers). `None` once the process is gone or without schedstat.
pub fn process_run_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            // The thread exited between the listing and the read.
            continue;
        };
        if let Some(ns) = parse_schedstat(&text) {
            total += ns;
            any = true;
        }
    }
    any.then(|| Duration::from_nanos(total))
}

/// The first field of sched-stats.rst's `/proc/PID/schedstat`: time spent
/// on the CPU, nanoseconds.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `VmRSS` and `VmHWM` of another process (zeros once it is gone).
pub fn process_memory(pid: u32) -> Memory {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

/// Datagrams the kernel dropped at the IPv4 UDP socket bound to `addr`
/// (a full receive buffer): the `drops` column of `/proc/net/udp`. `None`
/// when no such socket is listed (or off Linux, or for IPv6).
pub fn udp_socket_drops(addr: std::net::SocketAddr) -> Option<u64> {
    let std::net::SocketAddr::V4(addr) = addr else {
        return None;
    };
    parse_udp_drops(&std::fs::read_to_string("/proc/net/udp").ok()?, addr)
}

/// proc(5) `/proc/net/udp`: `sl local_address rem_address st ... drops`,
/// the local address as `%08X:%04X`, the IPv4 address being the
/// network-order bytes read as a native integer.
fn parse_udp_drops(table: &str, addr: std::net::SocketAddrV4) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (ip, port) = fields.get(1)?.split_once(':')?;
        let ip = std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
        let port = u16::from_str_radix(port, 16).ok()?;
        if (ip, port) != (*addr.ip(), addr.port()) {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

/// Returns freed heap memory to the kernel and resets the peak to the
/// current resident set (writing 5 to /proc/self/clear_refs, Linux 4.0+),
/// so the next [`memory`] peak is what was touched since. Without the
/// trim, memory freed by an earlier run would be reused without showing
/// in the resident set.
pub fn reset_peak() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The machine and toolchain, for the report header.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// Short git commit of the work tree, with `-dirty` if it has changes.
    pub commit: String,
    /// UTC date and time of the run.
    pub date: String,
}

/// Reads everything [`Machine`] holds; unknown parts say "unknown".
pub fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rustc = run("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());
    let commit = run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Only tracked files count: untracked work of others is not this tree.
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let date = run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        cores,
        kernel,
        rustc,
        commit: if dirty { format!("{commit}-dirty") } else { commit },
        date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_self_status() {
        let s = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_status(s),
            Memory {
                rss: 10 << 20,
                peak: 20 << 20
            }
        );
        assert_eq!(parse_status(""), Memory::default());
    }

    #[test]
    fn parses_another_process_stat() {
        // proc(5): pid (comm) state ppid ... utime stime; comm with a space and a ')'.
        let stat = "4242 (pion relay)) S 1 4242 4242 0 -1 4194560 700 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
        let me = std::process::id();
        assert!(process_cpu_time(me).is_some());
        assert!(process_memory(me).rss > 0);
    }

    #[test]
    fn run_time_is_the_threads_schedstat_summed() {
        assert_eq!(parse_schedstat("684631 0 1\n"), Some(684_631));
        assert_eq!(parse_schedstat(""), None);
        let me = std::process::id();
        let before = process_run_time(me).expect("schedstat on Linux");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_run_time(me).unwrap() > before);
        assert_eq!(process_run_time(u32::MAX), None);
    }

    #[test]
    fn finds_one_sockets_drops() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let table = format!(
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 1: {lo:08X}:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
             \x20 2: {lo:08X}:1F91 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 2 2 0000000000000000 4213\n"
        );
        let at = |port| std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
        assert_eq!(parse_udp_drops(&table, at(8081)), Some(4213));
        assert_eq!(parse_udp_drops(&table, at(8080)), Some(0));
        assert_eq!(parse_udp_drops(&table, at(8082)), None);
        // A socket of our own is listed, with no drops.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_socket_drops(s.local_addr().unwrap()), Some(0));
    }

    #[test]
    fn cpu_time_advances_with_work() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time() > before);
    }
}
