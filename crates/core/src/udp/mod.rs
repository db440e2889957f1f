//! UDP socket set-up shared by the backends, batched I/O ([`batch`]), and
//! the kernel's own drop counters (so benchmarks do not blame a transport
//! for them).

pub mod batch;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size the backends ask for. The default 212,992-byte
/// receive buffer overflows under unpaced 1,200-byte bursts on loopback
/// (CRATES.md); 4 MiB absorbs about 3,400 such packets.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a non-blocking UDP socket with `SO_RCVBUF`/`SO_SNDBUF` of `buffer`
/// bytes. The kernel caps the sizes at `net.core.rmem_max`/`wmem_max`; a cap
/// below the request is logged once per socket as a warning naming the
/// sysctl to raise.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack sockets would accept v4-mapped peers; be explicit.
        socket.set_only_v6(true)?;
    }
    socket.set_recv_buffer_size(buffer)?;
    socket.set_send_buffer_size(buffer)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Linux reports the doubled (bookkeeping-inclusive) size.
    let got = socket.recv_buffer_size()?;
    if got < buffer {
        tracing::warn!(
            requested = buffer,
            granted = got,
            "UDP receive buffer capped by the kernel; raise net.core.rmem_max to avoid drops under bursts"
        );
    }
    Ok(socket.into())
}

/// A range of local UDP ports media sockets bind in (`--media-ports
/// 40000-40099`), as operators open one in their firewalls (Janus's
/// `rtp_port_range`, mediasoup's `rtcMinPort`/`rtcMaxPort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// `lo..=hi`; `None` if `lo` is 0 or above `hi`.
    pub fn new(lo: u16, hi: u16) -> Option<PortRange> {
        (lo != 0 && lo <= hi).then_some(PortRange { lo, hi })
    }

    /// The first port.
    pub fn lo(self) -> u16 {
        self.lo
    }

    /// The last port.
    pub fn hi(self) -> u16 {
        self.hi
    }

    /// How many ports.
    pub fn len(self) -> u32 {
        u32::from(self.hi - self.lo) + 1
    }

    /// Never: a range has at least one port.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `LO-HI` (or one port, `PORT`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a port range like 40000-40099");
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        PortRange::new(lo, hi).ok_or_else(|| format!("{s:?}: ports run from 1 to 65535, low to high"))
    }
}

/// [`bind_udp`] on `addr`, or, if `addr` asks for any port (0) and `ports`
/// is given, on the first free port of the range, trying from a random
/// one so that sessions spread over it. Every port in use is an
/// [`io::ErrorKind::AddrInUse`] error that names the range.
pub fn bind_udp_in(
    addr: SocketAddr,
    ports: Option<PortRange>,
    buffer: usize,
) -> io::Result<std::net::UdpSocket> {
    let Some(range) = ports.filter(|_| addr.port() == 0) else {
        return bind_udp(addr, buffer);
    };
    // A random start without a random-number crate: the hasher's keys
    // are random per process.
    let start = {
        use std::hash::BuildHasher;
        (std::collections::hash_map::RandomState::new().hash_one(addr) % u64::from(range.len())) as u32
    };
    for i in 0..range.len() {
        let port = range.lo + ((start + i) % range.len()) as u16;
        match bind_udp(SocketAddr::new(addr.ip(), port), buffer) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            other => return other,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("every media port in {range} on {} is in use", addr.ip()),
    ))
}

/// Counters from the `Udp:` line of `/proc/net/snmp` (Linux). All zero
/// where the file does not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelUdpCounters {
    /// Datagrams delivered to sockets.
    pub in_datagrams: u64,
    /// Datagrams dropped because a socket receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped because a socket send buffer was full.
    pub sndbuf_errors: u64,
    /// All receive errors (includes `rcvbuf_errors`).
    pub in_errors: u64,
}

impl KernelUdpCounters {
    /// Reads the counters now (IPv4 and IPv6 are counted together by Linux
    /// in `Udp:` for v4 and `/proc/net/snmp6` for v6; both are summed).
    pub fn read() -> KernelUdpCounters {
        let mut c = std::fs::read_to_string("/proc/net/snmp")
            .ok()
            .and_then(|s| parse_snmp(&s))
            .unwrap_or_default();
        if let Ok(s) = std::fs::read_to_string("/proc/net/snmp6") {
            let v6 = parse_snmp6(&s);
            c.in_datagrams += v6.in_datagrams;
            c.rcvbuf_errors += v6.rcvbuf_errors;
            c.sndbuf_errors += v6.sndbuf_errors;
            c.in_errors += v6.in_errors;
        }
        c
    }

    /// Counts since `earlier`.
    pub fn since(&self, earlier: &KernelUdpCounters) -> KernelUdpCounters {
        KernelUdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
        }
    }
}

fn parse_snmp(text: &str) -> Option<KernelUdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(KernelUdpCounters {
        in_datagrams: get("InDatagrams"),
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
        in_errors: get("InErrors"),
    })
}

fn parse_snmp6(text: &str) -> KernelUdpCounters {
    let mut c = KernelUdpCounters::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(name), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let v = value.parse().unwrap_or(0);
        match name {
            "Udp6InDatagrams" => c.in_datagrams = v,
            "Udp6RcvbufErrors" => c.rcvbuf_errors = v,
            "Udp6SndbufErrors" => c.sndbuf_errors = v,
            "Udp6InErrors" => c.in_errors = v,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 31 0 5 32 4 1\n";
        let c = parse_snmp(text).unwrap();
        assert_eq!(
            c,
            KernelUdpCounters {
                in_datagrams: 31,
                rcvbuf_errors: 4,
                sndbuf_errors: 1,
                in_errors: 5
            }
        );
        let later = KernelUdpCounters {
            in_datagrams: 40,
            ..c
        };
        assert_eq!(later.since(&c).in_datagrams, 9);
    }

    #[test]
    fn binds_inside_a_port_range_until_it_is_used_up() {
        let probe = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 16).unwrap();
        let free = probe.local_addr().unwrap().port();
        drop(probe);
        let range: PortRange = format!("{free}-{free}").parse().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let first = bind_udp_in(any, Some(range), 1 << 16).unwrap();
        assert_eq!(first.local_addr().unwrap().port(), free);
        let err = bind_udp_in(any, Some(range), 1 << 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string()
                .contains(&format!("every media port in {free}-{free}")),
            "{err}"
        );
        // A socket asked for by port ignores the range.
        let other = bind_udp(any, 1 << 16).unwrap();
        let port = other.local_addr().unwrap().port();
        drop(other);
        let fixed = bind_udp_in(SocketAddr::new(any.ip(), port), Some(range), 1 << 16).unwrap();
        assert_eq!(fixed.local_addr().unwrap().port(), port);
    }

    #[test]
    fn port_ranges_parse_with_clear_errors() {
        assert_eq!("40000-40099".parse::<PortRange>().unwrap().len(), 100);
        assert_eq!(
            "5004".parse::<PortRange>(),
            Ok(PortRange::new(5004, 5004).unwrap())
        );
        assert!("0-10".parse::<PortRange>().unwrap_err().contains("1 to 65535"));
        assert!("20-10".parse::<PortRange>().unwrap_err().contains("low to high"));
        assert!(
            "a-b"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("like 40000-40099")
        );
    }

    #[test]
    fn binds_with_requested_buffers() {
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(s.local_addr().unwrap().port() != 0);
        let s6 = bind_udp("[::1]:0".parse().unwrap(), 1 << 20);
        // IPv6 loopback may be disabled in a sandbox; v4 is required.
        if let Ok(s6) = s6 {
            assert!(s6.local_addr().unwrap().is_ipv6());
        }
    }
}
