//! Unit tests of `path.rs`.

use super::*;
use crate::scenario::scenarios;

/// What the dc placement relies on: an answer's ICE is routed through
/// the proxy, and nothing is left for ICE to go around it with.
#[test]
fn sdp_rewrite_routes_ice_through_the_proxy() {
    let answer = "v=0\r\no=- 5 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:3940586727 1 udp 2130706431 127.0.0.1 51234 typ host\r\n\
        a=candidate:1861045190 1 udp 1694498815 203.0.113.9 51234 typ srflx raddr 127.0.0.1 rport 51234\r\n\
        a=end-of-candidates\r\n";
    let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let (routed, target) = relay::loopback::route_candidates(answer, proxy).unwrap();
    assert_eq!(target, "127.0.0.1:51234".parse::<SocketAddr>().unwrap());
    assert_eq!(relay::loopback::first_udp_candidate(&routed), Some(proxy));
    assert_eq!(routed.matches("a=candidate").count(), 1);
    assert!(!routed.contains("203.0.113.9"));
    // The default-candidate line named no candidate's IP: untouched.
    assert!(routed.contains("c=IN IP4 0.0.0.0\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_transfer_delivers_everything_on_a_clean_path() {
    let clean = scenarios().remove(0);
    for subject in Subject::ours() {
        let path = Path::open(subject, &clean, 1).await.unwrap();
        for total in [1000, 5000] {
            let (elapsed, delivered) = path.windowed(total, 1200, 512, Duration::from_millis(50)).await;
            assert!(elapsed > Duration::ZERO, "{subject:?}");
            assert_eq!(delivered, total, "{subject:?}");
        }
        let (_, done) = path.ping_pong(50, 200, Duration::from_millis(100)).await;
        assert_eq!(done, 50, "{subject:?}");
        path.close().await;
    }
}
