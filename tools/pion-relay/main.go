// Command pion-relay is one end of a UDP → WebRTC data channel → UDP relay
// built on pion (Debian's golang-github-pion-webrtc.v3-dev, 3.1.56): the
// third-party baseline that relay-bench measures `dc reliable` and
// `dc unreliable` against, through the same netsim proxy and workloads.
//
// Two processes make a relay: an offerer and an answerer. Each binds one
// UDP socket on 127.0.0.1; every datagram it receives there becomes one
// data-channel message, and every message from the channel is sent as one
// datagram to -udp-peer. The harness drives the offer/answer exchange over
// stdin and stdout, one JSON object per line, so it can rewrite the ICE
// candidates and put its proxy between the two peers exactly as it does for
// its own dc ends:
//
//	stdout {"event":"listening","udp":"127.0.0.1:40001"}
//	stdout {"event":"offer","sdp":"..."}        (offerer; answerer: "answer")
//	stdin  {"sdp":"..."}                        (the other side's description)
//	stdout {"event":"open","setup_us":4211}     (peer connection created → channel open)
//
// It exits 0 when stdin reaches EOF or on SIGTERM/SIGINT, and 1 (with the
// reason on stderr) when any step takes longer than -timeout or the peer
// connection fails. Counters are printed to stderr on exit.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/ice/v2"
	"github.com/pion/webrtc/v3"
)

// Largest datagram or message read: a whole UDP payload.
const maxDatagram = 65536

// The UDP socket buffers asked for: the same 4 MiB as relay-core's
// DEFAULT_SOCKET_BUFFER, so both relays meet bursts with the same kernel
// queue (the kernel caps it at net.core.rmem_max/wmem_max).
const socketBuffer = 4 << 20

// Bytes the channel may hold unsent before the relay stops feeding it:
// above this a reliable channel stops reading UDP (the kernel queue then
// absorbs or drops), an unreliable one drops the datagram and counts it.
// The same order as dc-relay's 512 KiB SCTP allowance plus its outbox.
const defaultMaxBuffered = 1 << 20

// errQuit: stdin closed or a signal came during setup; not a failure.
var errQuit = errors.New("told to stop")

type config struct {
	role        string
	reliable    bool
	listen      string
	peer        *net.UDPAddr
	timeout     time.Duration
	maxBuffered uint64
}

type event struct {
	Event   string `json:"event"`
	UDP     string `json:"udp,omitempty"`
	SDP     string `json:"sdp,omitempty"`
	SetupUs int64  `json:"setup_us,omitempty"`
}

type counters struct {
	udpIn, dcOut, dcIn, udpOut, dropped atomic.Uint64
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pion-relay: %v\n", err)
		os.Exit(2)
	}
	if err := run(cfg); errors.Is(err, errQuit) {
		fmt.Fprintf(os.Stderr, "pion-relay %s: told to stop before the channel opened\n", cfg.role)
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "pion-relay %s: %v\n", cfg.role, err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	role := flag.String("role", "", "offer or answer")
	mode := flag.String("mode", "reliable", "reliable (ordered) or unreliable (unordered, maxRetransmits=0)")
	listen := flag.String("listen", "127.0.0.1:0", "UDP address to receive datagrams for the channel on")
	peer := flag.String("udp-peer", "", "UDP address that messages from the channel are sent to")
	timeout := flag.Duration("timeout", 10*time.Second, "longest wait for any setup step")
	maxBuffered := flag.Uint64("max-buffered", defaultMaxBuffered, "bytes the channel may hold unsent")
	flag.Parse()
	if *role != "offer" && *role != "answer" {
		return config{}, fmt.Errorf("-role must be offer or answer, not %q", *role)
	}
	if *mode != "reliable" && *mode != "unreliable" {
		return config{}, fmt.Errorf("-mode must be reliable or unreliable, not %q", *mode)
	}
	to, err := net.ResolveUDPAddr("udp4", *peer)
	if err != nil || *peer == "" {
		return config{}, fmt.Errorf("-udp-peer must be an IPv4 address:port, not %q", *peer)
	}
	return config{*role, *mode == "reliable", *listen, to, *timeout, *maxBuffered}, nil
}

// say writes one event line to stdout (the harness reads it).
func say(e event) {
	b, err := json.Marshal(e)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pion-relay: cannot encode %s: %v\n", e.Event, err)
		return
	}
	fmt.Printf("%s\n", b)
}

func run(cfg config) error {
	laddr, err := net.ResolveUDPAddr("udp4", cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", cfg.listen, err)
	}
	conn, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return fmt.Errorf("cannot bind UDP %s: %w", cfg.listen, err)
	}
	defer conn.Close()
	if err := conn.SetReadBuffer(socketBuffer); err != nil {
		return fmt.Errorf("SO_RCVBUF: %w", err)
	}
	if err := conn.SetWriteBuffer(socketBuffer); err != nil {
		return fmt.Errorf("SO_SNDBUF: %w", err)
	}
	say(event{Event: "listening", UDP: conn.LocalAddr().String()})

	// Loopback host candidates only: no mDNS, no STUN, one UDP candidate
	// on 127.0.0.1 that the harness can route through its proxy.
	var se webrtc.SettingEngine
	se.DetachDataChannels()
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))

	started := time.Now()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return fmt.Errorf("new peer connection: %w", err)
	}
	defer pc.Close()

	failed := make(chan error, 1)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		fmt.Fprintf(os.Stderr, "pion-relay %s: peer connection %s\n", cfg.role, s)
		if s == webrtc.PeerConnectionStateFailed {
			select {
			case failed <- errors.New("peer connection failed (ICE or DTLS)"):
			default:
			}
		}
	})

	opened := make(chan *webrtc.DataChannel, 1)
	onOpen := func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() { opened <- dc })
	}
	var offerType webrtc.SDPType
	if cfg.role == "offer" {
		init := webrtc.DataChannelInit{}
		if !cfg.reliable {
			ordered, zero := false, uint16(0)
			init.Ordered, init.MaxRetransmits = &ordered, &zero
		}
		dc, err := pc.CreateDataChannel("relay", &init)
		if err != nil {
			return fmt.Errorf("create data channel: %w", err)
		}
		onOpen(dc)
		offerType = webrtc.SDPTypeAnswer
	} else {
		pc.OnDataChannel(onOpen)
		offerType = webrtc.SDPTypeOffer
	}

	// stdin: the other side's description, then nothing until EOF.
	lines := make(chan string, 1)
	stdinClosed := make(chan struct{})
	go func() {
		defer close(stdinClosed)
		r := bufio.NewReaderSize(os.Stdin, 1<<16)
		for {
			line, err := r.ReadString('\n')
			if len(line) > 1 {
				select {
				case lines <- line:
				default:
					fmt.Fprintf(os.Stderr, "pion-relay %s: ignored an unexpected stdin line\n", cfg.role)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// quit closes on stdin EOF or SIGTERM/SIGINT: every wait below ends
	// on it, and the program exits 0.
	quit := make(chan struct{})
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		select {
		case s := <-signals:
			fmt.Fprintf(os.Stderr, "pion-relay %s: %s\n", cfg.role, s)
		case <-stdinClosed:
		}
		close(quit)
	}()

	readRemote := func() (webrtc.SessionDescription, error) {
		select {
		case line := <-lines:
			var d struct {
				SDP string `json:"sdp"`
			}
			if err := json.Unmarshal([]byte(line), &d); err != nil || d.SDP == "" {
				return webrtc.SessionDescription{}, fmt.Errorf("stdin: expected {\"sdp\": ...}, got %q", line)
			}
			return webrtc.SessionDescription{Type: offerType, SDP: d.SDP}, nil
		case <-quit:
			return webrtc.SessionDescription{}, errQuit
		case <-time.After(cfg.timeout):
			return webrtc.SessionDescription{}, fmt.Errorf("no remote description on stdin within %s", cfg.timeout)
		}
	}
	// Non-trickle: the description is printed with every candidate in it.
	publishLocal := func(d webrtc.SessionDescription) error {
		gathered := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(d); err != nil {
			return fmt.Errorf("set local description: %w", err)
		}
		select {
		case <-gathered:
		case <-quit:
			return errQuit
		case <-time.After(cfg.timeout):
			return fmt.Errorf("ICE gathering not complete within %s", cfg.timeout)
		}
		say(event{Event: d.Type.String(), SDP: pc.LocalDescription().SDP})
		return nil
	}

	if cfg.role == "offer" {
		offer, err := pc.CreateOffer(nil)
		if err != nil {
			return fmt.Errorf("create offer: %w", err)
		}
		if err := publishLocal(offer); err != nil {
			return err
		}
		answer, err := readRemote()
		if err != nil {
			return err
		}
		if err := pc.SetRemoteDescription(answer); err != nil {
			return fmt.Errorf("set remote description (answer): %w", err)
		}
	} else {
		offer, err := readRemote()
		if err != nil {
			return err
		}
		if err := pc.SetRemoteDescription(offer); err != nil {
			return fmt.Errorf("set remote description (offer): %w", err)
		}
		answer, err := pc.CreateAnswer(nil)
		if err != nil {
			return fmt.Errorf("create answer: %w", err)
		}
		if err := publishLocal(answer); err != nil {
			return err
		}
	}

	var dc *webrtc.DataChannel
	select {
	case dc = <-opened:
	case err := <-failed:
		return err
	case <-quit:
		return errQuit
	case <-time.After(cfg.timeout):
		return fmt.Errorf("data channel not open within %s (ICE %s)", cfg.timeout, pc.ICEConnectionState())
	}
	raw, err := dc.Detach()
	if err != nil {
		return fmt.Errorf("detach data channel: %w", err)
	}
	say(event{Event: "open", SetupUs: time.Since(started).Microseconds()})

	var n counters
	low := make(chan struct{}, 1)
	dc.SetBufferedAmountLowThreshold(cfg.maxBuffered / 2)
	dc.OnBufferedAmountLow(func() {
		select {
		case low <- struct{}{}:
		default:
		}
	})
	done := make(chan error, 2)
	go func() { done <- udpToChannel(cfg, conn, dc, raw, low, &n) }()
	go func() { done <- channelToUDP(cfg, conn, raw, &n) }()

	var result error
	select {
	case <-quit:
	case err := <-failed:
		result = err
	case err := <-done:
		result = err
	}
	fmt.Fprintf(os.Stderr, "pion-relay %s: udp in %d, channel out %d, dropped %d (send buffer full), channel in %d, udp out %d\n",
		cfg.role, n.udpIn.Load(), n.dcOut.Load(), n.dropped.Load(), n.dcIn.Load(), n.udpOut.Load())
	return result
}

// udpToChannel sends each datagram as one message. Above maxBuffered a
// reliable channel waits (bounded, rechecking) for the buffer to drain and
// an unreliable one drops the datagram.
func udpToChannel(cfg config, conn *net.UDPConn, dc *webrtc.DataChannel, raw datachannel.ReadWriteCloser, low <-chan struct{}, n *counters) error {
	buf := make([]byte, maxDatagram)
	for {
		m, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return fmt.Errorf("UDP receive: %w", err)
		}
		n.udpIn.Add(1)
		if dc.BufferedAmount() > cfg.maxBuffered {
			if !cfg.reliable {
				n.dropped.Add(1)
				continue
			}
			for dc.BufferedAmount() > cfg.maxBuffered {
				select {
				case <-low:
				// The low-water callback can race the check above: look again.
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		if _, err := raw.Write(buf[:m]); err != nil {
			return fmt.Errorf("data channel send: %w", err)
		}
		n.dcOut.Add(1)
	}
}

// channelToUDP sends each message as one datagram to -udp-peer.
func channelToUDP(cfg config, conn *net.UDPConn, raw datachannel.ReadWriteCloser, n *counters) error {
	buf := make([]byte, maxDatagram)
	for {
		m, err := raw.Read(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("data channel closed by the peer")
			}
			return fmt.Errorf("data channel receive: %w", err)
		}
		n.dcIn.Add(1)
		// A full socket buffer on loopback (ENOBUFS) loses this datagram
		// only, as it would for any UDP sender; keep relaying.
		if _, err := conn.WriteToUDP(buf[:m], cfg.peer); err == nil {
			n.udpOut.Add(1)
		}
	}
}
