//! UDP socket set-up shared by the backends, and the kernel's own drop
//! counters (so benchmarks do not blame a transport for them).

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
