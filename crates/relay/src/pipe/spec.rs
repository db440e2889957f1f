//! How a local stream is written on the command line:
//! `ADDR[,rtcp=PORT|ADDR][,pt=N]...`.
//!
//! - `ADDR` is the stream's RTP address. On the offering side (`--in`) the
//!   relay binds it and the local source sends there; on the answering side
//!   (`--out`) it is the destination (an SFU's forwarding port, ffmpeg's or
//!   GStreamer's `udpsrc`).
//! - `rtcp=` gives the stream a separate RTCP address, as SFUs use on
//!   their forwarding ports (Janus `rtp_forward`'s `rtcp_port`, a streaming
//!   mountpoint's `rtcpport`, mediasoup's `rtcpPort` without `rtcpMux`) and
//!   as ffmpeg's `rtcpport` and GStreamer's rtpbin do. A bare port means
//!   the RTP address's IP. Without it RTCP shares the RTP port (RFC 5761).
//! - `pt=` (answering side, repeatable) routes RTP of that payload type to
//!   this stream; a stream without `pt=` takes every payload type no other
//!   stream names. See [`route`].
//!
//! One syntax for one stream, repeatable, rather than `--in` plus a
//! separate `--in-rtcp`: with several streams per link the RTCP address
//! must stay next to the RTP address it belongs to.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One local stream of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Where RTP is received (offering side) or sent (answering side).
    pub rtp: SocketAddr,
    /// A separate RTCP address; `None` multiplexes RTCP on `rtp`.
    pub rtcp: Option<SocketAddr>,
    /// RTP payload types routed to this stream on the answering side;
    /// empty takes every payload type no other stream names.
    pub payload_types: Vec<u8>,
}

impl StreamSpec {
    /// A stream at `rtp` with RTCP multiplexed and no payload-type filter.
    pub fn muxed(rtp: SocketAddr) -> StreamSpec {
        StreamSpec {
            rtp,
            rtcp: None,
            payload_types: Vec::new(),
        }
    }

    /// With a separate RTCP address.
    pub fn with_rtcp(mut self, rtcp: SocketAddr) -> StreamSpec {
        self.rtcp = Some(rtcp);
        self
    }

    /// Routing payload type `pt` to this stream.
    pub fn with_payload_type(mut self, pt: u8) -> StreamSpec {
        self.payload_types.push(pt & 0x7f);
        self
    }
}

impl fmt::Display for StreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rtp)?;
        if let Some(rtcp) = self.rtcp {
            if rtcp.ip() == self.rtp.ip() {
                write!(f, ",rtcp={}", rtcp.port())?;
            } else {
                write!(f, ",rtcp={rtcp}")?;
            }
        }
        for pt in &self.payload_types {
            write!(f, ",pt={pt}")?;
        }
        Ok(())
    }
}

/// Why a stream spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad stream {input:?}: {reason} (expected ADDR[,rtcp=PORT|ADDR][,pt=N]..., e.g. 127.0.0.1:5004,rtcp=5005,pt=96)"
)]
pub struct BadStreamSpec {
    input: String,
    reason: String,
}

impl FromStr for StreamSpec {
    type Err = BadStreamSpec;

    fn from_str(s: &str) -> Result<StreamSpec, BadStreamSpec> {
        let bad = |reason: String| BadStreamSpec {
            input: s.to_string(),
            reason,
        };
        let mut parts = s.split(',').map(str::trim);
        let first = parts.next().unwrap_or_default();
        let rtp: SocketAddr = first
            .parse()
            .map_err(|_| bad(format!("{first:?} is not an IP:PORT address")))?;
        let mut spec = StreamSpec::muxed(rtp);
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
            match key {
                "rtcp" => {
                    if spec.rtcp.is_some() {
                        return Err(bad("rtcp= given twice".into()));
                    }
                    let rtcp = match value.parse::<u16>() {
                        Ok(port) => SocketAddr::new(rtp.ip(), port),
                        Err(_) => value.parse().map_err(|_| {
                            bad(format!("rtcp={value:?} is neither a port nor an IP:PORT address"))
                        })?,
                    };
                    if rtcp == rtp && rtp.port() != 0 {
                        return Err(bad(
                            "rtcp= is the RTP address; leave it out to multiplex RTCP on the RTP port".into(),
                        ));
                    }
                    if rtcp.is_ipv4() != rtp.is_ipv4() {
                        return Err(bad(
                            "rtcp= and the RTP address are of different IP families".into()
                        ));
                    }
                    spec.rtcp = Some(rtcp);
                }
                "pt" => {
                    let pt: u8 = value
                        .parse()
                        .ok()
                        .filter(|pt| *pt <= 127)
                        .ok_or_else(|| bad(format!("pt={value:?} is not a payload type 0-127")))?;
                    if (64..=95).contains(&pt) {
                        // RFC 5761 section 4: these collide with RTCP packet types.
                        return Err(bad(format!("pt={pt} collides with RTCP (RFC 5761 section 4)")));
                    }
                    if spec.payload_types.contains(&pt) {
                        return Err(bad(format!("pt={pt} given twice")));
                    }
                    spec.payload_types.push(pt);
                }
                other => return Err(bad(format!("unknown key {other:?} (known: rtcp, pt)"))),
            }
        }
        Ok(spec)
    }
}

/// Checks a set of streams for one side of a link: at least one, no
/// address used twice, no payload type routed to two streams and, where
/// link RTP is routed by payload type (`routed`, the answering side), at
/// most one catch-all.
pub fn check_streams(streams: &[StreamSpec], routed: bool) -> Result<(), String> {
    if streams.is_empty() {
        return Err("at least one stream is needed".into());
    }
    let mut addrs = Vec::new();
    for s in streams {
        // Port 0 (any free port) never collides.
        for a in std::iter::once(s.rtp).chain(s.rtcp).filter(|a| a.port() != 0) {
            if addrs.contains(&a) {
                return Err(format!("address {a} is used by two streams"));
            }
            addrs.push(a);
        }
    }
    let mut pts = Vec::new();
    for s in streams {
        for pt in &s.payload_types {
            if pts.contains(pt) {
                return Err(format!("pt={pt} is routed to two streams"));
            }
            pts.push(*pt);
        }
    }
    if routed && streams.iter().filter(|s| s.payload_types.is_empty()).count() > 1 {
        return Err("more than one stream without pt=: say which payload types go to which stream".into());
    }
    Ok(())
}

/// The stream RTP of payload type `pt` goes to: the one naming `pt`, else
/// the one naming none (the catch-all), else none.
pub fn route(streams: &[StreamSpec], pt: u8) -> Option<usize> {
    streams
        .iter()
        .position(|s| s.payload_types.contains(&pt))
        .or_else(|| streams.iter().position(|s| s.payload_types.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> StreamSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_rtp_rtcp_and_payload_types() {
        let a: SocketAddr = "10.0.0.1:5004".parse().unwrap();
        assert_eq!(spec("10.0.0.1:5004"), StreamSpec::muxed(a));
        assert_eq!(
            spec("10.0.0.1:5004,rtcp=5005,pt=96,pt=97"),
            StreamSpec::muxed(a)
                .with_rtcp("10.0.0.1:5005".parse().unwrap())
                .with_payload_type(96)
                .with_payload_type(97)
        );
        assert_eq!(
            spec("10.0.0.1:5004, rtcp=10.0.0.9:7000").rtcp,
            Some("10.0.0.9:7000".parse().unwrap())
        );
        assert_eq!(
            spec("[::1]:5004,rtcp=5005").rtcp,
            Some("[::1]:5005".parse().unwrap())
        );
        for s in [
            "10.0.0.1:5004",
            "10.0.0.1:5004,rtcp=5005,pt=111",
            "[::1]:1,rtcp=[::2]:3",
        ] {
            assert_eq!(spec(s).to_string(), s, "display round-trips");
        }
    }

    #[test]
    fn refuses_what_cannot_be_meant() {
        for (input, why) in [
            ("", "not an IP:PORT"),
            ("localhost:5004", "not an IP:PORT"),
            ("10.0.0.1:5004,rtcp", "KEY=VALUE"),
            ("10.0.0.1:5004,rtcp=x", "neither a port"),
            ("10.0.0.1:5004,rtcp=5004", "multiplex"),
            ("10.0.0.1:5004,rtcp=5005,rtcp=5006", "twice"),
            ("10.0.0.1:5004,rtcp=[::1]:5", "families"),
            ("10.0.0.1:5004,pt=128", "0-127"),
            ("10.0.0.1:5004,pt=72", "RFC 5761"),
            ("10.0.0.1:5004,pt=96,pt=96", "twice"),
            ("10.0.0.1:5004,port=1", "unknown key"),
        ] {
            let e = input.parse::<StreamSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(e.contains("expected ADDR"), "the error shows the syntax: {e}");
        }
    }

    #[test]
    fn routes_by_payload_type_with_one_catch_all() {
        let streams = [
            spec("127.0.0.1:6004,rtcp=6005,pt=96"),
            spec("127.0.0.1:6006,pt=111,pt=0"),
            spec("127.0.0.1:6008"),
        ];
        check_streams(&streams, true).unwrap();
        assert_eq!(route(&streams, 96), Some(0));
        assert_eq!(route(&streams, 111), Some(1));
        assert_eq!(route(&streams, 0), Some(1));
        assert_eq!(route(&streams, 100), Some(2), "the catch-all");
        assert_eq!(route(&streams[..2], 100), None, "no catch-all: unrouted");
    }

    #[test]
    fn a_set_of_streams_is_checked_as_a_whole() {
        assert!(check_streams(&[], false).is_err());
        let dup_addr = [spec("127.0.0.1:1,rtcp=2"), spec("127.0.0.1:2")];
        assert!(
            check_streams(&dup_addr, false)
                .unwrap_err()
                .contains("127.0.0.1:2")
        );
        let dup_pt = [spec("127.0.0.1:1,pt=96"), spec("127.0.0.1:3,pt=96")];
        assert!(check_streams(&dup_pt, false).unwrap_err().contains("pt=96"));
        let two_catch_alls = [spec("127.0.0.1:1"), spec("127.0.0.1:3")];
        assert!(check_streams(&two_catch_alls, true).unwrap_err().contains("pt="));
        // Offering side: every --in takes whatever its source sends.
        check_streams(&two_catch_alls, false).unwrap();
    }
}
