//! `relay offer`: relay what arrives on `--in` to one answering relay, or
//! to several at once (fan-out); and the links of a node's `--forward`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use relay::LinkOptions;
use relay::metrics::OfferedLink;
use relay::pipe::{Branch, Pipe, PipeCounters, PipeOptions, Side, StreamSpec};
use relay::reconnect::{LinkEvent, OfferPlan, OfferState};
use relay_signaling::SignalingClient;
use relay_signaling::metrics::serve_metrics;
use tracing::Instrument;

use crate::{shutdown_signal, status_line};

/// The links to offer for `planned` targets, each with its signaling
/// client (bearer `token`, the link's pin) and, with `reconnect`, the
/// default reconnect policy.
pub(crate) fn link_offers(
    planned: Vec<relay::targets::PlannedLink>,
    token: Option<String>,
    options: &LinkOptions,
    reconnect: bool,
) -> Result<Vec<LinkOffer>, String> {
    let mut links = Vec::with_capacity(planned.len());
    for p in planned {
        let client = SignalingClient::new(&p.url)
            .map_err(|e| e.to_string())?
            .with_token(token.clone());
        let client = match p.fingerprint {
            Some(fp) => client.with_fingerprint(fp),
            None => client,
        };
        let plan = relay::reconnect::OfferPlan {
            transport: p.transport,
            mode: p.mode,
            options: options.clone(),
            reconnect: reconnect.then(relay::reconnect::ReconnectPolicy::default),
        };
        links.push(LinkOffer {
            name: p.name,
            url: p.url,
            client,
            plan,
        });
    }
    Ok(links)
}

/// One answering relay `relay offer` keeps a link to.
pub(crate) struct LinkOffer {
    /// The link's label (`link=`), used in a fan-out.
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) client: SignalingClient,
    pub(crate) plan: OfferPlan,
}

pub(crate) async fn offer(
    links: Vec<LinkOffer>,
    input: &[StreamSpec],
    pipe_options: PipeOptions,
    metrics_listen: Option<(SocketAddr, Option<String>)>,
) -> Result<ExitCode, String> {
    let counters = Arc::new(PipeCounters::default());
    let pipe = Pipe::bind(Side::Offer, input, pipe_options, counters.clone())
        .map_err(|e| format!("cannot listen on --in: {e}"))?;
    let ins: Vec<String> = pipe
        .local_addrs()
        .iter()
        .map(|(rtp, rtcp)| match rtcp {
            Some(rtcp) => format!("{rtp},rtcp={rtcp}"),
            None => rtp.to_string(),
        })
        .collect();
    let input = ins.join(" in=");
    let states: Vec<Arc<OfferState>> = links.iter().map(|_| Arc::default()).collect();
    // One link is sent onto directly, as it always was; several each get
    // a branch of the pipe with its own queue.
    let branches = if links.len() > 1 {
        pipe.fan_out(links.len())
    } else {
        Vec::new()
    };
    let metrics = match metrics_listen {
        Some((addr, token)) => {
            let shown = if branches.is_empty() {
                vec![OfferedLink::single(states[0].clone(), counters.clone())]
            } else {
                links
                    .iter()
                    .zip(&states)
                    .zip(&branches)
                    .map(|((l, state), branch)| {
                        OfferedLink::branch(l.name.clone(), state.clone(), branch.clone())
                    })
                    .collect()
            };
            let source = relay::metrics::offer_source(shown, counters.clone());
            Some(
                serve_metrics(addr, token, source, None)
                    .await
                    .map_err(|e| format!("cannot serve /metrics on --metrics-listen {addr}: {e}"))?,
            )
        }
        None => None,
    };
    let metrics_note = metrics
        .as_ref()
        .map(|m| format!(" metrics={}", m.url()))
        .unwrap_or_default();
    let note = Notes {
        input: Some(input),
        metrics: metrics_note,
    };
    let code = if branches.is_empty() {
        let link = links.into_iter().next().ok_or("no --signal given")?;
        offer_one(link, &pipe, &states[0], &note).await?
    } else {
        fan_out(links, branches, states, note).await
    };
    if let Some(m) = metrics {
        m.shutdown().await;
    }
    Ok(code)
}

/// What every `ready` status line of `relay offer` repeats.
#[derive(Clone)]
pub(crate) struct Notes {
    /// The --in addresses, bound (` in=` between streams); none for a
    /// node's --forward links.
    pub(crate) input: Option<String>,
    /// ` metrics=URL`, or nothing.
    pub(crate) metrics: String,
}

/// `relay offer` to one answering relay: the pipe sends onto the link
/// directly, and the command ends when the link does (unless it reconnects).
async fn offer_one(
    link: LinkOffer,
    pipe: &Pipe,
    state: &OfferState,
    note: &Notes,
) -> Result<ExitCode, String> {
    let LinkOffer { client, plan, .. } = link;
    let (transport, mode) = (plan.transport, plan.mode);
    let on_event = |event: LinkEvent<'_>| {
        if let LinkEvent::Up { session } = event {
            status_line(&format!(
                "ready transport={transport} mode={mode} in={} session={session}{}",
                note.input.as_deref().unwrap_or_default(),
                note.metrics
            ));
        }
    };
    tokio::select! {
        r = relay::offer_and_carry(&client, &plan, pipe, state, on_event) => {
            let reason = r.map_err(|e| e.to_string())?;
            eprintln!("relay: link closed: {reason}");
            Ok(ExitCode::FAILURE)
        }
        _ = shutdown_signal() => {
            if let Some((id, link)) = state.current() {
                end_session(&client, &id, link, pipe.counters()).await;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `relay offer` to several answering relays: each link runs on its own
/// task, with its own branch of the pipe (see [`LinkTasks`]). A link that
/// ends for good leaves the others running; the command ends when every
/// link has, or on Ctrl-C.
async fn fan_out(
    links: Vec<LinkOffer>,
    branches: Vec<Branch>,
    states: Vec<Arc<OfferState>>,
    note: Notes,
) -> ExitCode {
    let mut tasks = LinkTasks::spawn(links, branches, states, note);
    let code = tokio::select! {
        _ = tasks.all_ended() => {
            eprintln!("relay: every link has closed");
            ExitCode::FAILURE
        }
        _ = shutdown_signal() => ExitCode::SUCCESS,
    };
    tasks.stop().await;
    code
}

/// Links that run on their own tasks, each through its own outlet, with
/// its own reconnects and status lines (`ready link=NAME …`, `down
/// link=NAME …`, `failed link=NAME …`): a fanned-out `relay offer`'s
/// links, or a node's `--forward` links.
pub(crate) struct LinkTasks {
    tasks: tokio::task::JoinSet<()>,
    /// What ending each link's session takes.
    ends: Vec<(SignalingClient, Arc<OfferState>, Arc<PipeCounters>, tracing::Span)>,
}

impl LinkTasks {
    pub(crate) fn spawn<O: relay::pipe::Outlet + 'static>(
        links: Vec<LinkOffer>,
        outlets: Vec<O>,
        states: Vec<Arc<OfferState>>,
        note: Notes,
    ) -> LinkTasks {
        let mut tasks = tokio::task::JoinSet::new();
        let mut ends = Vec::with_capacity(links.len());
        for ((link, outlet), state) in links.into_iter().zip(outlets).zip(states) {
            // Every log line of a link's task names the link.
            let span = tracing::info_span!("link", name = %link.name);
            ends.push((
                link.client.clone(),
                state.clone(),
                outlet.counters().clone(),
                span.clone(),
            ));
            let note = note.clone();
            let task = async move {
                let LinkOffer {
                    name,
                    url,
                    client,
                    plan,
                } = link;
                let (transport, mode) = (plan.transport, plan.mode);
                let input = note
                    .input
                    .as_deref()
                    .map(|i| format!(" in={i}"))
                    .unwrap_or_default();
                let on_event = |event: LinkEvent<'_>| match event {
                    LinkEvent::Up { session } => status_line(&format!(
                        "ready link={name} signal={url} transport={transport} mode={mode}{input} session={session}{}",
                        note.metrics
                    )),
                    LinkEvent::Down { session, reason } => status_line(&format!(
                        "down link={name} signal={url} session={session} reason={reason}"
                    )),
                };
                if let Err(error) = relay::offer_and_carry(&client, &plan, &outlet, &state, on_event).await {
                    status_line(&format!("failed link={name} signal={url} error={error}"));
                    eprintln!("relay: link {name} to {url}: {error}");
                }
            };
            tasks.spawn(task.instrument(span));
        }
        LinkTasks { tasks, ends }
    }

    /// Resolves when every link has ended for good.
    async fn all_ended(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops every link's loop first (no reconnect from here on), then
    /// ends the sessions still up, all at once.
    pub(crate) async fn stop(mut self) {
        self.tasks.shutdown().await;
        let mut deletes = tokio::task::JoinSet::new();
        for (client, state, counters, span) in self.ends {
            if let Some((id, link)) = state.current() {
                deletes
                    .spawn(async move { end_session(&client, &id, link, &counters).await }.instrument(span));
            }
        }
        deletes.join_all().await;
    }
}

/// Ends session `id` on Ctrl-C: DELETE first, so the answering server ends
/// the session as asked rather than seeing the link's goodbye first; then
/// the link.
async fn end_session(
    client: &SignalingClient,
    id: &str,
    link: Arc<dyn relay_core::RelayLink>,
    counters: &PipeCounters,
) {
    match relay::delete_session(client, id, Duration::from_secs(3)).await {
        Ok(()) => tracing::info!(session = %id, "session deleted"),
        Err(error) => tracing::warn!(session = %id, %error, "could not delete the session"),
    }
    link.close();
    log_end(&*link, counters, &relay_core::CloseReason::Local);
}

pub(crate) fn log_end(
    link: &dyn relay_core::RelayLink,
    counters: &PipeCounters,
    reason: &relay_core::CloseReason,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = link.stats();
    tracing::info!(
        %reason,
        to_link = counters.to_link.load(Relaxed),
        to_local = counters.to_local.load(Relaxed),
        rejected = counters.rejected.load(Relaxed),
        foreign = counters.foreign.load(Relaxed),
        not_rtcp = counters.not_rtcp.load(Relaxed),
        keepalives = counters.keepalives.load(Relaxed),
        unrouted = counters.unrouted.load(Relaxed),
        keyframe_requests = counters.keyframe_requests.load(Relaxed),
        keyframe_requests_relayed = counters.keyframe_requests_relayed.load(Relaxed),
        keyframe_requests_merged = counters.keyframe_requests_merged.load(Relaxed),
        no_link = counters.no_link.load(Relaxed),
        queue_overflow = counters.queue_overflow.load(Relaxed),
        sent = s.packets_sent,
        received = s.packets_received,
        drops = s.drops.total(),
        "session ended"
    );
}
