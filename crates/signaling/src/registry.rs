//! The live sessions of one server: ids, the session cap, and the
//! shutting-down flag, behind one lock that is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use relay_core::{Mode, Transport};

use crate::Session;

/// One live session.
#[derive(Clone)]
pub(crate) struct Entry {
    pub transport: Transport,
    pub mode: Mode,
    pub session: Arc<dyn Session>,
}

impl Entry {
    /// The session's mode: its link's once up, else the one it was offered
    /// in. A bare W3C offer names no mode (`mode` holds the dc default), and
    /// the dc answerer relays the channel the peer opens in that channel's
    /// mode, so until then only the link can say.
    pub fn current_mode(&self) -> Mode {
        self.session.stats().map_or(self.mode, |stats| stats.mode)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("transport", &self.transport)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Why no new session can be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_sessions` sessions are live or being answered.
    Full(usize),
    /// The server is shutting down.
    ShuttingDown,
}

impl Refusal {
    pub(crate) fn message(self) -> String {
        match self {
            Refusal::Full(max) => format!(
                "session limit reached ({max} sessions); delete unused sessions or raise max_sessions"
            ),
            Refusal::ShuttingDown => "the signaling server is shutting down".into(),
        }
    }
}

pub(crate) struct Registry {
    max_sessions: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Entry>,
    /// Offers being answered right now: they count against the cap so that
    /// concurrent offers cannot overshoot it.
    reserved: usize,
    closing: bool,
}

impl Registry {
    pub(crate) fn new(max_sessions: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max_sessions,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock can leave the map half-updated, so a panic
        // elsewhere while holding it is no reason to stop serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for an offer about to be answered.
    pub(crate) fn reserve(self: &Arc<Self>) -> Result<Reservation, Refusal> {
        let mut inner = self.lock();
        if inner.closing {
            return Err(Refusal::ShuttingDown);
        }
        if inner.sessions.len() + inner.reserved >= self.max_sessions {
            return Err(Refusal::Full(self.max_sessions));
        }
        inner.reserved += 1;
        Ok(Reservation {
            registry: Arc::clone(self),
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<Entry> {
        self.lock().sessions.get(id).cloned()
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Entry> {
        self.lock().sessions.remove(id)
    }

    /// Every live session, sorted by id so listings are stable.
    pub(crate) fn list(&self) -> Vec<(String, Entry)> {
        let mut all: Vec<_> = self
            .lock()
            .sessions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.list().into_iter().map(|(id, _)| id).collect()
    }

    /// Refuses every new session from now on and hands back the live ones
    /// (for the caller to close outside the lock).
    pub(crate) fn drain_for_shutdown(&self) -> Vec<(String, Entry)> {
        let mut inner = self.lock();
        inner.closing = true;
        let mut all: Vec<_> = inner.sessions.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A slot taken by [`Registry::reserve`]; released when dropped (the offer
/// was refused, or the request was abandoned mid-answer).
pub(crate) struct Reservation {
    registry: Arc<Registry>,
}

impl Reservation {
    /// Registers the answered session under a fresh id. Gives the entry back
    /// if the server began shutting down while the offer was being answered:
    /// the caller must close it.
    pub(crate) fn insert(self, entry: Entry) -> Result<String, Entry> {
        let mut inner = self.registry.lock();
        if inner.closing {
            return Err(entry);
        }
        let id = loop {
            let id = new_session_id();
            if !inner.sessions.contains_key(&id) {
                break id;
            }
        };
        inner.sessions.insert(id.clone(), entry);
        Ok(id)
        // `self` drops here, releasing the slot now that the session holds one.
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.reserved = inner.reserved.saturating_sub(1);
    }
}

/// 128 random bits from the thread-local CSPRNG, in hex: ids are the only
/// handle on a session besides the token, so they must not be guessable.
fn new_session_id() -> String {
    use std::fmt::Write;
    let bytes: [u8; 16] = rand::random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::{CloseReason, LinkStats};

    struct Idle;

    #[async_trait::async_trait]
    impl Session for Idle {
        fn stats(&self) -> Option<LinkStats> {
            None
        }
        fn close(&self) {}
        async fn closed(&self) -> CloseReason {
            std::future::pending().await
        }
    }

    fn entry() -> Entry {
        Entry {
            transport: Transport::RtpUdp,
            mode: Mode::Unreliable,
            session: Arc::new(Idle),
        }
    }

    #[test]
    fn reservations_count_against_the_cap_until_released() {
        let r = Registry::new(2);
        let a = r.reserve().unwrap();
        let b = r.reserve().unwrap();
        assert_eq!(r.reserve().err(), Some(Refusal::Full(2)));
        drop(b); // refused offer
        let id = a.insert(entry()).unwrap();
        let c = r.reserve().unwrap();
        assert_eq!(r.reserve().err(), Some(Refusal::Full(2)));
        drop(c);
        assert!(r.remove(&id).is_some());
        assert!(r.remove(&id).is_none());
        assert!(r.ids().is_empty());
        r.reserve().unwrap();
    }

    #[test]
    fn nothing_is_inserted_once_shutting_down() {
        let r = Registry::new(8);
        let live = r.reserve().unwrap().insert(entry()).unwrap();
        let in_flight = r.reserve().unwrap();
        let drained = r.drain_for_shutdown();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].0, live);
        assert!(
            in_flight.insert(entry()).is_err(),
            "answered during shutdown: caller closes it"
        );
        assert_eq!(r.reserve().err(), Some(Refusal::ShuttingDown));
        assert!(r.ids().is_empty());
    }

    #[test]
    fn ids_are_128_bit_hex_and_distinct() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
