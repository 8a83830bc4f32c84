//! A gRPC channel as the real libraries run one: subchannels that connect,
//! go READY, lose their connection and reconnect, with gRPC's connection
//! back-off after failures (doc/connection-backoff.md), and a picker that
//! only hands out READY connections, in turn (round_robin), or the one
//! connection of `pick_first`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::conn::{self, Connection, DialConfig, DialError};

/// gRPC's connection back-off parameters.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MULTIPLIER: f64 = 1.6;
const JITTER: f64 = 0.2;
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// Back-off between failed connection attempts: 1 s, x1.6 each time, up to
/// 120 s, each +-20% at random; reset once a connection is READY.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    random: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
            random: seed | 1,
        }
    }

    pub fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let unit = (xorshift(&mut self.random) >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let wait = self.next.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0));
        self.next = self.next.mul_f64(MULTIPLIER).min(MAX_BACKOFF);
        wait
    }
}

/// xorshift64: jitter (and the tests' random bytes) need no cryptographic
/// randomness. `state` must not be 0.
pub(super) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Failed connection attempts to one address.
#[derive(Debug, Clone)]
pub struct DialFailures {
    pub count: u64,
    pub last: DialError,
    pub last_at: Instant,
}

#[derive(Clone)]
enum State {
    Connecting,
    Ready(Arc<Connection>),
    Failing,
}

/// One subchannel: the addresses it tries in order (pick_first's list, or
/// one endpoint), its state, its label in the report.
struct Subchannel {
    addrs: Vec<SocketAddr>,
    state: Mutex<State>,
}

/// What the channel's subchannels did, for the evidence.
#[derive(Default)]
struct History {
    connections: Vec<Arc<Connection>>,
    failures: BTreeMap<SocketAddr, DialFailures>,
}

struct Shared {
    subchannels: Vec<Subchannel>,
    config: DialConfig,
    changed: Notify,
    next_pick: AtomicUsize,
    next_id: AtomicU32,
    history: Mutex<History>,
    stop: watch::Sender<bool>,
    /// Since when every subchannel has been failing (TRANSIENT_FAILURE).
    all_failing_since: Mutex<Option<Instant>>,
}

/// A channel whose subchannels connect in the background from creation on.
pub struct Channel {
    shared: Arc<Shared>,
    managers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Everything the channel saw, once it is closed.
pub struct ChannelRecord {
    pub connections: Vec<Arc<Connection>>,
    pub failures: BTreeMap<SocketAddr, DialFailures>,
    /// When the channel was closed (connections still open end then).
    pub closed_at: Instant,
}

impl Channel {
    /// One subchannel per entry of `subchannels` (each a list of addresses
    /// tried in order), connecting at once, as round_robin does.
    pub fn new(subchannels: Vec<Vec<SocketAddr>>, config: DialConfig, first_id: u32) -> Channel {
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            subchannels: subchannels
                .into_iter()
                .map(|addrs| Subchannel {
                    addrs,
                    state: Mutex::new(State::Connecting),
                })
                .collect(),
            config,
            changed: Notify::new(),
            next_pick: AtomicUsize::new(0),
            next_id: AtomicU32::new(first_id),
            history: Mutex::new(History::default()),
            stop,
            all_failing_since: Mutex::new(None),
        });
        let managers = (0..shared.subchannels.len())
            .map(|i| tokio::spawn(manage(shared.clone(), i)))
            .collect();
        Channel {
            shared,
            managers: Mutex::new(managers),
        }
    }

    /// A READY connection, in turn over the subchannels that have one.
    /// While some subchannel is connecting it waits (until `deadline`); when
    /// every one is failing it fails at once, as gRPC does for a call
    /// without wait-for-ready. `Err` says why none was ready.
    pub async fn pick(&self, deadline: Instant) -> Result<Arc<Connection>, String> {
        loop {
            let changed = self.shared.changed.notified();
            if let Some(connection) = self.pick_ready() {
                return Ok(connection);
            }
            if *self.shared.stop.borrow() {
                return Err("channel closed".to_string());
            }
            if self.failing_for().is_some() {
                return Err(self.why_not_ready());
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self.why_not_ready());
            }
        }
    }

    fn pick_ready(&self) -> Option<Arc<Connection>> {
        let subchannels = &self.shared.subchannels;
        let n = subchannels.len();
        let start = self.shared.next_pick.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|k| {
            let state = subchannels[(start + k) % n]
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match &*state {
                State::Ready(c) if c.is_usable() => Some(c.clone()),
                _ => None,
            }
        })
    }

    /// How long every subchannel has been failing, if they all are.
    pub fn failing_for(&self) -> Option<Duration> {
        self.shared
            .all_failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }

    pub fn why_not_ready(&self) -> String {
        let history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match history.failures.values().max_by_key(|f| f.last_at) {
            Some(f) => format!("no endpoint ready: {}", f.last.describe()),
            None => "no endpoint ready yet".to_string(),
        }
    }

    /// Stops reconnecting, closes every connection and returns the record.
    pub async fn close(&self) -> ChannelRecord {
        let _ = self.shared.stop.send(true);
        let managers =
            std::mem::take(&mut *self.managers.lock().unwrap_or_else(|p| p.into_inner()));
        for manager in managers {
            manager.abort();
            let _ = manager.await;
        }
        let closed_at = Instant::now();
        let history = std::mem::take(
            &mut *self
                .shared
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        ChannelRecord {
            connections: history.connections,
            failures: history.failures,
            closed_at,
        }
    }
}

fn set_state(shared: &Shared, index: usize, state: State) {
    *shared.subchannels[index]
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = state;
    let all_failing = shared.subchannels.iter().all(|s| {
        matches!(
            *s.state.lock().unwrap_or_else(|p| p.into_inner()),
            State::Failing
        )
    });
    {
        let mut since = shared
            .all_failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (all_failing, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }
    shared.changed.notify_waiters();
}

/// A subchannel's life: connect (each address in turn), serve while READY,
/// reconnect at once when the connection ends, back off when connecting
/// fails.
async fn manage(shared: Arc<Shared>, index: usize) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ index as u64;
    let mut backoff = Backoff::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut stop = shared.stop.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        set_state(&shared, index, State::Connecting);
        let mut ready = None;
        for &addr in &shared.subchannels[index].addrs {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            match conn::dial_named(addr, id, &shared.config).await {
                Ok(connection) => {
                    ready = Some(Arc::new(connection));
                    break;
                }
                Err(error) => {
                    let mut history = shared.history.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = history.failures.entry(addr).or_insert(DialFailures {
                        count: 0,
                        last: error.clone(),
                        last_at: Instant::now(),
                    });
                    entry.count += 1;
                    entry.last = error;
                    entry.last_at = Instant::now();
                }
            }
        }
        match ready {
            Some(connection) => {
                backoff.reset();
                shared
                    .history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .connections
                    .push(connection.clone());
                set_state(&shared, index, State::Ready(connection.clone()));
                tokio::select! {
                    _ = connection.wait_going_away() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            None => {
                set_state(&shared, index, State::Failing);
                let wait = backoff.next_wait();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_like_grpc_with_jitter_and_caps() {
        let mut backoff = Backoff::new(42);
        let waits: Vec<f64> = (0..15).map(|_| backoff.next_wait().as_secs_f64()).collect();
        let mut base = 1.0f64;
        for wait in &waits {
            assert!(
                *wait >= base * 0.8 - 1e-9 && *wait <= base * 1.2 + 1e-9,
                "{waits:?}"
            );
            base = (base * 1.6).min(120.0);
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(1200));
    }
}
