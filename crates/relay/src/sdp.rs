//! Clock rates from an SDP file, as ffmpeg (`-sdp_file`), GStreamer and
//! SFUs write them for an RTP stream: every `a=rtpmap:PT NAME/RATE[/CH]`
//! line (RFC 8866 section 6.6) names a payload type's clock rate.

use relay_core::ClockRate;

/// Every `a=rtpmap` clock rate in `sdp`. A malformed `a=rtpmap` line is an
/// error naming the line; everything else is ignored.
pub fn clock_rates(sdp: &str) -> Result<Vec<ClockRate>, String> {
    let mut rates = Vec::new();
    for (n, line) in sdp.lines().enumerate() {
        let Some(map) = line.trim().strip_prefix("a=rtpmap:") else {
            continue;
        };
        let bad = || format!("line {}: {line:?} is not a=rtpmap:PT ENCODING/RATE", n + 1);
        let (pt, encoding) = map.split_once(' ').ok_or_else(bad)?;
        let rate = encoding.split('/').nth(1).ok_or_else(bad)?;
        let rate: ClockRate = format!("{pt}={rate}")
            .parse()
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        rates.push(rate);
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_ffmpeg_writes() {
        // ffmpeg -f rtp -sdp_file, audio and video.
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\n\
                   m=video 5004 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\nb=AS:200\r\n\
                   a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
                   m=audio 5006 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let rates: Vec<(u8, u32)> = clock_rates(sdp)
            .unwrap()
            .iter()
            .map(|r| (r.payload_type(), r.hz()))
            .collect();
        assert_eq!(rates, vec![(96, 90_000), (111, 48_000)]);
    }

    #[test]
    fn a_malformed_rtpmap_names_its_line() {
        let e = clock_rates("v=0\na=rtpmap:96 H264\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = clock_rates("a=rtpmap:300 opus/48000\n").unwrap_err();
        assert!(e.contains("0 to 127"), "{e}");
    }
}
