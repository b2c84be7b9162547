//! budget: the client connection budget — `max_connections` slots, which of them hold an idle
//! connection and since when, the eviction of the longest idle ones when a new client finds the
//! budget spent, and the count of connections per client address (`max_connections_per_ip`).
//! It decides who is closed; the engines close (`proxy::h1`, `proxy::h2`). It never reads or
//! writes a socket.
//!
//! Why: with every slot held by connections that send nothing (or keep-alive connections between
//! requests), a new client would wait in the listen backlog until `header_timeout` or
//! `idle_timeout` cut one; one host could hold the whole budget. As nginx reuses connections
//! ("worker_connections are not enough, reusing connections"), a spent budget closes the
//! connections idle longest: an HTTP/1 connection waiting for its next head (or its first), an
//! HTTP/2 one with no open stream (after GOAWAY), a TLS one before its ClientHello. A connection
//! with a request in flight, a head begun or a handshake under way is never evicted.
//!
//! Each slot's state is one atomic: 0 while busy (or free), the idle start (microseconds since
//! the budget's epoch, plus one) while idle, [`EVICTED`] once asked to close. A connection turns
//! idle or busy with one store or compare-exchange on its own slot; only the acceptor, when the
//! budget is spent, scans the slots. The per-address counts are a sharded map touched at accept
//! and close only, never per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
// NOTE: the per-address counts take a std Mutex, one of 64 shards, held for one map operation,
// at accept and close only: never on the request path, which the lint guards.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::metrics::Global;

/// A slot's state while its connection has something in flight, or no connection holds it.
const BUSY: u64 = 0;
/// A slot's state once the acceptor asked its idle connection to close.
const EVICTED: u64 = u64::MAX;
/// Most connections closed by one scan of the slots, as nginx's `ngx_drain_connections` bounds
/// it: a spent budget under a flood then costs one scan per this many new clients.
const EVICT_BATCH: usize = 32;
/// Shards of the per-address counts: accepts and closes of different clients rarely meet on one
/// lock.
const IP_SHARDS: usize = 64;

/// The `max_connections` slots of the client side, shared by the acceptor and every connection.
pub(crate) struct Budget {
    slots: Box<[Slot]>,
    /// Slots no connection holds.
    free: ArrayQueue<u32>,
    /// A slot was freed, or a connection turned idle while `wanted`.
    changed: Notify,
    /// The acceptor waits for a slot: a connection turning idle wakes it.
    wanted: AtomicBool,
    epoch: Instant,
    per_ip: Option<PerIp>,
    /// Where the open, evicted and refused connections are counted.
    metrics: Arc<Global>,
}

struct Slot {
    state: AtomicU64,
    /// The connection's task while it waits idle, woken when it is evicted.
    waker: AtomicWaker,
}

/// Open connections per client address, for `max_connections_per_ip`. An address's entry lives
/// while it has a connection, so the map holds at most `max_connections` entries.
#[allow(clippy::disallowed_types)]
struct PerIp {
    limit: u32,
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
}

#[allow(clippy::disallowed_types)]
impl PerIp {
    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        // FNV-1a over the address bytes: stable and cheap; the shard only spreads contention.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        match ip {
            IpAddr::V4(v4) => feed(&v4.octets()),
            IpAddr::V6(v6) => feed(&v6.octets()),
        }
        &self.shards[(hash % IP_SHARDS as u64) as usize]
    }

    /// Counts a connection from `ip`; `false` (nothing counted) when it has `limit` already.
    fn admit(&self, ip: IpAddr) -> bool {
        // A poisoned shard only means a panic elsewhere mid-update of plain integers: go on.
        let mut shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        let open = shard.entry(ip).or_insert(0);
        if *open >= self.limit {
            return false;
        }
        *open += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = shard.get_mut(&ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&ip);
            }
        }
    }
}

#[allow(clippy::disallowed_types)]
impl Budget {
    /// `max_connections` slots (at least one); `per_ip`: `max_connections_per_ip`.
    pub fn new(max_connections: usize, per_ip: Option<u32>, metrics: Arc<Global>) -> Arc<Budget> {
        let n = max_connections.clamp(1, u32::MAX as usize);
        let free = ArrayQueue::new(n);
        for i in 0..n {
            // `free` was made with room for every slot.
            let _ = free.push(i as u32);
        }
        Arc::new(Budget {
            slots: (0..n)
                .map(|_| Slot {
                    state: AtomicU64::new(BUSY),
                    waker: AtomicWaker::new(),
                })
                .collect(),
            free,
            changed: Notify::new(),
            wanted: AtomicBool::new(false),
            epoch: Instant::now(),
            per_ip: per_ip.map(|limit| PerIp {
                limit,
                shards: (0..IP_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            }),
            metrics,
        })
    }

    /// Counts a new connection from `ip` against `max_connections_per_ip`: `None` (counted as
    /// refused) when that address has its limit open already: the connection is to be closed at
    /// once.
    /// `listener` is the listener's index in `Global::listeners`, whose open count the
    /// connection's ticket holds.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, listener: usize) -> Option<Admitted> {
        if let Some(per_ip) = &self.per_ip {
            if !per_ip.admit(ip) {
                self.metrics
                    .connections_refused_per_ip
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        Some(Admitted {
            budget: Arc::clone(self),
            ip,
            listener: u16::try_from(listener).unwrap_or(u16::MAX),
        })
    }

    /// A slot for the admitted connection, busy until its task marks it idle (waiting for its
    /// first byte). When the budget is spent, the connections idle longest are asked to close
    /// (each counted), and this waits for one to go (or for a connection with a request in flight
    /// to end). Cancel safe.
    pub async fn ticket(self: &Arc<Self>, admitted: Admitted) -> Ticket {
        // Connections this wait asked to close: each frees its slot soon (an evicted connection
        // always closes), so no more are asked until one has, however often this wakes.
        let mut asked = 0;
        let slot = loop {
            if let Some(slot) = self.free.pop() {
                break slot;
            }
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Ordered against `Ticket::idle`'s store and load (both SeqCst): either this scan
            // sees that connection idle, or that connection sees `wanted` and wakes this wait.
            self.wanted.store(true, Ordering::SeqCst);
            if let Some(slot) = self.free.pop() {
                break slot;
            }
            if asked == 0 {
                asked = self.evict_idlest();
                self.metrics
                    .connections_evicted
                    .fetch_add(asked as u64, Ordering::Relaxed);
            }
            notified.await;
        };
        self.wanted.store(false, Ordering::Relaxed);
        self.metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        if let Some(listener) = self
            .metrics
            .listeners
            .load()
            .get(usize::from(admitted.listener))
        {
            listener.open.fetch_add(1, Ordering::Relaxed);
        }
        let ticket = Ticket {
            budget: Arc::clone(&admitted.budget),
            slot,
            ip: admitted.ip,
            listener: admitted.listener,
        };
        // The ticket now releases the address's count.
        std::mem::forget(admitted);
        ticket
    }

    fn stamp(&self, since: Instant) -> u64 {
        let us = since.saturating_duration_since(self.epoch).as_micros();
        // Clamped below EVICTED; plus one, as 0 is BUSY.
        u64::try_from(us).unwrap_or(EVICTED - 2).min(EVICTED - 2) + 1
    }

    /// Asks the connections idle longest to close: one eighth of the idle ones, at least one and
    /// at most [`EVICT_BATCH`] (nginx's rule). Returns how many were asked.
    fn evict_idlest(&self) -> usize {
        // The oldest idle stamps seen, oldest first: (stamp, slot).
        let mut oldest: [(u64, u32); EVICT_BATCH] = [(u64::MAX, 0); EVICT_BATCH];
        let mut idle = 0usize;
        for (i, slot) in self.slots.iter().enumerate() {
            let state = slot.state.load(Ordering::Relaxed);
            if state == BUSY || state == EVICTED {
                continue;
            }
            idle += 1;
            if state < oldest[EVICT_BATCH - 1].0 {
                let at = oldest.partition_point(|&(s, _)| s <= state);
                oldest.copy_within(at..EVICT_BATCH - 1, at + 1);
                oldest[at] = (state, i as u32);
            }
        }
        let batch = (idle / 8).clamp(1, EVICT_BATCH).min(idle);
        let mut asked = 0;
        for &(stamp, i) in &oldest[..batch] {
            let slot = &self.slots[i as usize];
            // Only if it is still idle since then: one that turned busy meanwhile keeps going.
            if slot
                .state
                .compare_exchange(stamp, EVICTED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.waker.wake();
                asked += 1;
            }
        }
        asked
    }
}

/// A connection counted against its address's limit, before it has a slot.
pub(crate) struct Admitted {
    budget: Arc<Budget>,
    ip: IpAddr,
    listener: u16,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(per_ip) = &self.budget.per_ip {
            per_ip.release(self.ip);
        }
    }
}

/// One connection's share of the budget: its slot (and its address's count) until dropped with
/// the connection.
pub(crate) struct Ticket {
    budget: Arc<Budget>,
    slot: u32,
    ip: IpAddr,
    /// The listener that accepted it (`Global::listeners`).
    listener: u16,
}

impl Ticket {
    fn slot(&self) -> &Slot {
        &self.budget.slots[self.slot as usize]
    }

    /// The connection waits for its client (nothing in flight, no head begun) since `since`: it
    /// may be evicted from now on. Only a busy connection turns idle: an idle one keeps its
    /// stamp, and an eviction already asked for stands. Callers mark a connection idle only once
    /// a wait for its client has found nothing to read, so bytes already waiting are never lost
    /// to an eviction.
    pub fn idle(&self, since: Instant) {
        let state = &self.slot().state;
        if state.load(Ordering::Relaxed) != BUSY {
            return;
        }
        let stamp = self.budget.stamp(since);
        if state
            .compare_exchange(BUSY, stamp, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
            && self.budget.wanted.load(Ordering::SeqCst)
        {
            self.budget.changed.notify_one();
        }
    }

    /// [`Ticket::idle`] from now, reading the clock only when the connection was busy.
    pub fn idle_now(&self) {
        if self.slot().state.load(Ordering::Relaxed) == BUSY {
            self.idle(Instant::now());
        }
    }

    /// The client sent something: the connection is busy and no longer evictable. `false`
    /// when it was evicted first (it is to close).
    pub fn busy(&self) -> bool {
        let state = &self.slot().state;
        let now = state.load(Ordering::Relaxed);
        now != EVICTED
            && (now == BUSY
                || state
                    .compare_exchange(now, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok())
    }

    /// Ready once the connection has been evicted; registers the task to be woken then. For an
    /// idle wait.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let slot = self.slot();
        if slot.state.load(Ordering::Acquire) == EVICTED {
            return Poll::Ready(());
        }
        slot.waker.register(cx.waker());
        if slot.state.load(Ordering::Acquire) == EVICTED {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the connection has been evicted.
    #[cfg(test)]
    fn is_evicted(&self) -> bool {
        self.slot().state.load(Ordering::Acquire) == EVICTED
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(listener) = budget
            .metrics
            .listeners
            .load()
            .get(usize::from(self.listener))
        {
            listener.open.fetch_sub(1, Ordering::Relaxed);
        }
        self.slot().state.store(BUSY, Ordering::Relaxed);
        // Taken from `free`, so there is room for it.
        let _ = budget.free.push(self.slot);
        budget.changed.notify_one();
        if let Some(per_ip) = &budget.per_ip {
            per_ip.release(self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn an_address_over_its_limit_is_refused_until_one_of_its_connections_closes() {
        let budget = Budget::new(10, Some(2), Arc::default());
        let one = budget.admit(A, 0).expect("first");
        let two = budget.admit(A, 0).expect("second");
        assert!(budget.admit(A, 0).is_none());
        assert_eq!(
            budget
                .metrics
                .connections_refused_per_ip
                .load(Ordering::Relaxed),
            1
        );
        let other = budget.admit(B, 0).expect("another address");
        drop(one);
        let three = budget.admit(A, 0).expect("after a close");
        drop((two, three, other));
        // Entries go with their last connection: the map stays bounded by open connections.
        let per_ip = budget.per_ip.as_ref().expect("limit set");
        assert!(per_ip
            .shards
            .iter()
            .all(|s| s.lock().expect("shard").is_empty()));
    }

    /// docs/config.md says a slot costs about 50 bytes: this one and its place in `free` (a
    /// sequence stamp and the index, 16 bytes).
    #[test]
    fn a_slot_is_small() {
        assert!(
            std::mem::size_of::<Slot>() <= 32,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[tokio::test]
    async fn a_spent_budget_evicts_the_longest_idle_connection_and_never_a_busy_one() {
        let budget = Budget::new(3, None, Arc::default());
        let start = Instant::now();
        let ticket = |at: u64| {
            let budget = Arc::clone(&budget);
            async move {
                let admitted = budget.admit(A, 0).expect("no per-address limit");
                let ticket = budget.ticket(admitted).await;
                ticket.idle(start + Duration::from_millis(at));
                ticket
            }
        };
        let busy = ticket(0).await;
        assert!(busy.busy());
        let older = ticket(10).await;
        let newer = ticket(20).await;

        let mut fourth = Box::pin(ticket(30));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(fourth.as_mut().poll(&mut cx).is_pending());
        // One of two idle: the older is asked to close, the busy one never.
        let metrics = &budget.metrics;
        assert_eq!(metrics.connections_evicted.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 3);
        assert!(older.is_evicted());
        assert!(!older.busy(), "an evicted connection stays evicted");
        assert!(!newer.is_evicted() && !busy.is_evicted());
        drop(older);
        let fourth = tokio::time::timeout(Duration::from_secs(1), fourth)
            .await
            .expect("the freed slot goes to the waiting client");
        assert!(!fourth.is_evicted());
        drop((busy, newer, fourth));
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 0);
    }
}
