//! The link's tasks around the quinn connection: the watcher that turns
//! the connection's end into a close reason, datagram mode's feeder, the
//! datagram reader, the stream acceptor with one reader per peer stream,
//! and stream mode's writer (the module docs of `link` say who does what).

use super::*;

pub(super) async fn watch(shared: Arc<Shared>) {
    let err = shared.conn.closed().await;
    let reason = close_reason(&err, shared.liveness_timeout);
    if shared.shut(reason.clone()) {
        tracing::debug!(peer = %shared.conn.remote_address(), %reason, "RoQ link closed");
    }
}

/// Datagram mode's sender: moves packets from our timestamped queue into
/// quinn's datagram buffer, oldest first, dropping (and counting as
/// expired) every packet that waited longer than the budget, here or in
/// quinn's buffer (`budget.rs` says how).
pub(super) async fn feed_datagrams(shared: Arc<Shared>) {
    loop {
        if shared.signal.is_closed() {
            return;
        }
        // The budget is what the receiver sees: the path's one-way delay
        // (half the smoothed RTT) comes off what may be spent here.
        let allowance = send_allowance(shared.max_delay, shared.conn.rtt());
        let (next, expired) = lock(&shared.datagram_queue).pop_fresh(Instant::now(), allowance);
        shared.stats.on_drops(DropCause::Expired, expired);
        let Some(mut waiting) = next else {
            // Nothing queued: count what quinn sent meanwhile, then sleep
            // until `send` queues more (a stored permit covers a send that
            // came between the pop and here).
            shared.sync_in_quinn(&mut lock(&shared.in_quinn));
            shared.datagram_queued.notified().await;
            continue;
        };
        loop {
            let (w, until) = match shared.hand_to_quinn(waiting, allowance) {
                Step::Done => break,
                Step::Wait(w, until) => (w, until),
                Step::Closed => return,
            };
            waiting = w;
            // quinn is full of media still within the budget: wait for it to
            // send (its window opens), for this packet to expire, or for
            // the oldest in quinn to expire (then this one displaces it).
            let expires = waiting.at + allowance;
            let deadline = until.map_or(expires, |t| t.min(expires));
            // One millisecond past, so the deadline has really passed.
            let deadline = tokio::time::Instant::from_std(deadline + Duration::from_millis(1));
            tokio::select! {
                sent = shared.conn.send_datagram_wait(waiting.item.datagram.clone()) => {
                    match sent {
                        Ok(()) => {
                            lock(&shared.in_quinn).on_handed(waiting, 0, |_| {});
                        }
                        Err(e) => {
                            if let Step::Closed = shared.datagram_refused(waiting.item.packet.len(), e) {
                                return;
                            }
                        }
                    }
                    break;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if is_expired(waiting.at, Instant::now(), allowance) {
                        shared.stats.on_drop(DropCause::Expired);
                        break;
                    }
                }
                _ = shared.signal.wait() => return,
            }
        }
    }
}

pub(super) async fn read_datagrams(shared: Arc<Shared>) {
    // Ends with an error when the connection closes; the watcher says why.
    while let Ok(datagram) = shared.conn.read_datagram().await {
        match roq::decode_datagram(datagram) {
            Ok((flow, payload)) if flow == shared.flow_id => match Packet::parse(payload) {
                Ok(packet) => {
                    if !shared.deliver_now(packet) {
                        return;
                    }
                }
                Err(e) => shared.note_malformed(format_args!("datagram: {e}")),
            },
            // RoQ section 5.1: the flow id stands for the address and port of
            // plain RTP, and unsignaled flows are dropped (we buffer none).
            Ok(_) => shared.stats.on_drop(DropCause::UnknownSource),
            Err(e) => shared.note_malformed(format_args!("{e}")),
        }
    }
}

pub(super) async fn accept_streams(shared: Arc<Shared>) {
    // RoQ section 5.2: a peer may open any number of streams (one per
    // frame, say); each gets its own reader.
    while let Ok(stream) = shared.conn.accept_uni().await {
        tokio::spawn(read_stream(shared.clone(), stream));
    }
}

async fn read_stream(shared: Arc<Shared>, mut stream: RecvStream) {
    let mut decoder = StreamDecoder::new(MAX_STREAM_PACKET_RECEIVED);
    loop {
        let mut chunk: Bytes = match stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                if let Err(e) = decoder.finish() {
                    shared.note_malformed(format_args!("stream ended early: {e}"));
                }
                return;
            }
            // RoQ section 5.2.2: RESET_STREAM (ROQ_FRAME_CANCELLED) discards
            // the packet in flight; later media comes on another stream.
            Err(ReadError::Reset(code)) => {
                tracing::debug!(%code, "peer reset a RoQ stream");
                return;
            }
            // Connection gone (the watcher reports it) or stream misuse.
            Err(_) => return,
        };
        loop {
            match decoder.decode(&mut chunk) {
                Ok(None) => break,
                Ok(Some(StreamEvent::FlowId(flow))) if flow != shared.flow_id => {
                    // RoQ section 5.1: we buffer no unsignaled flows, so the
                    // stream is refused at once.
                    let _ = stream.stop(VarInt::from_u32(ErrorCode::UnknownFlowId as u32));
                    shared.stats.on_drop(DropCause::UnknownSource);
                    tracing::warn!(
                        flow,
                        expected = shared.flow_id,
                        "refused a RoQ stream with an unknown flow id"
                    );
                    return;
                }
                Ok(Some(StreamEvent::FlowId(_))) => {}
                Ok(Some(StreamEvent::Packet(bytes))) => match Packet::parse(bytes) {
                    Ok(packet) => {
                        if !shared.deliver_wait(packet).await {
                            return;
                        }
                    }
                    Err(e) => shared.note_malformed(format_args!("stream packet: {e}")),
                },
                Err(e) => {
                    // The framing is lost for the rest of this stream: stop
                    // it (RoQ section 7, ROQ_PACKET_ERROR). The connection and
                    // the peer's other streams carry on.
                    let _ = stream.stop(VarInt::from_u32(e.code() as u32));
                    shared.note_malformed(format_args!("{e}"));
                    return;
                }
            }
        }
    }
}

/// Stream mode's sender: one long-lived unidirectional stream, so packets
/// stay in order (RoQ section 5.2.1 framing).
pub(super) async fn write_stream(shared: Arc<Shared>, mut stream: SendStream) {
    let mut batch: Vec<Packet> = Vec::with_capacity(WRITE_BATCH);
    let mut chunks: Vec<Bytes> = Vec::with_capacity(2 * WRITE_BATCH + 1);
    let mut headers = BytesMut::new();
    let mut stream_opened = false;
    while let Ok(first) = shared.outbox.pop().await {
        batch.push(first);
        shared.outbox.pop_batch(&mut batch, WRITE_BATCH - 1);
        if headers.capacity() < 8 * (WRITE_BATCH + 1) {
            headers = BytesMut::with_capacity(ARENA_BYTES / 16);
        }
        if !stream_opened {
            let _ = roq::encode_stream_header(shared.flow_id, &mut headers);
            chunks.push(headers.split().freeze());
            stream_opened = true;
        }
        for packet in batch.drain(..) {
            let _ = roq::encode_packet_length(packet.len(), &mut headers);
            chunks.push(headers.split().freeze());
            chunks.push(packet.into_bytes());
        }
        match stream.write_all_chunks(&mut chunks).await {
            Ok(()) => {}
            // RoQ section 5.2.2: STOP_SENDING means "send newer media on a new
            // stream"; what was queued for the stopped one is dropped.
            Err(WriteError::Stopped(code)) => {
                tracing::debug!(%code, "peer stopped our RoQ stream; opening another");
                match shared.conn.open_uni().await {
                    Ok(s) => {
                        stream = s;
                        stream_opened = false;
                    }
                    Err(_) => return,
                }
            }
            // The connection is gone; the watcher reports why.
            Err(_) => return,
        }
        chunks.clear();
    }
    let _ = stream.finish();
}
