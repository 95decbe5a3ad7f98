//! The registry: which actor owns which key (an (app, phone), a message, or a
//! delivery endpoint).
//!
//! A `DashMap` from key to the actor's address, with get-or-spawn under the shard
//! lock, so two concurrent first calls for one key cannot start two writers. A new
//! actor is placed on the next arbiter of the pool (one per core) — or, for a
//! registry built [`Registry::local_first`], on the calling thread's own arbiter when
//! that thread was marked with [`host_actors_here`] (an HTTP worker): the request,
//! its actor and the reply then stay on one thread. An entry whose
//! mailbox has closed (the actor panicked: panics are not supervised) is replaced on
//! the next call. The reaper drops entries that are idle — untouched for the idle
//! time ([`DONE_GRACE_MS`], two seconds, once marked done) and owing no work
//! (`busy == 0`); dropping the last `Addr` stops the actor, so memory follows the
//! live working set. Idle time is the runtime clock's monotonic time
//! ([`Clock::monotonic`]), so a test moves it with a `ManualClock`.

use std::cell::Cell;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, ArbiterHandle};
use dashmap::mapref::entry::Entry;

use crate::clock::Clock;

struct Slot<A: Actor> {
    addr: Addr<A>,
    /// The clock's monotonic time, in milliseconds, when a caller last took this address.
    touched: AtomicU64,
    /// Work the actor still owes (queued or in-flight deliveries); never reaped while > 0.
    busy: Arc<AtomicUsize>,
    /// The actor's subject needs no more memory (e.g. a message after its update):
    /// reaped after [`DONE_GRACE_MS`] without a touch.
    done: AtomicBool,
}

/// How long an actor marked done stays after its last touch. Long enough that a
/// caller who took its address has delivered its message before the entry goes (so
/// no second actor for the key can load state the first is still changing).
pub(crate) const DONE_GRACE_MS: u64 = 2_000;

thread_local! {
    /// Whether new actors of `local_first` registries may live on this thread.
    static HOSTS_ACTORS: Cell<bool> = const { Cell::new(false) };
}

/// Lets the current thread, if it is an actix arbiter (an actix-web worker), host
/// the OTP actors first called from it: each then lives on the thread that serves
/// its requests, so a call and its reply need no hand-over between threads. A
/// thread that is not an arbiter is left as it is.
pub fn host_actors_here() {
    if Arbiter::try_current().is_some() {
        HOSTS_ACTORS.with(|h| h.set(true));
    }
}

/// The current thread's arbiter, if it was marked by [`host_actors_here`].
fn local_arbiter() -> Option<ArbiterHandle> {
    if HOSTS_ACTORS.with(Cell::get) {
        Arbiter::try_current()
    } else {
        None
    }
}

type Spawn<'a, A> = Box<dyn FnOnce(&ArbiterHandle, Arc<AtomicUsize>) -> Addr<A> + 'a>;

/// Map of live actors of one kind, spread over a pool of arbiters.
pub(crate) struct Registry<K, A: Actor> {
    map: crate::FastDashMap<K, Slot<A>>,
    /// One counter shared by every slot when the actors owe no work of their own
    /// (OTP and message actors): saves an allocation per actor.
    shared_busy: Option<Arc<AtomicUsize>>,
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
    /// Whether a marked calling thread's own arbiter is preferred to the pool.
    local_first: bool,
    /// Whose monotonic time idle and done-grace times are measured in.
    clock: Arc<dyn Clock>,
}

impl<K: Hash + Eq + Clone, A: Actor> Registry<K, A> {
    /// A registry whose actors never owe work (`busy` stays 0), idle on `clock`'s time.
    pub(crate) fn new(arbiters: Vec<ArbiterHandle>, clock: Arc<dyn Clock>) -> Self {
        Registry {
            map: crate::FastDashMap::default(),
            shared_busy: Some(Arc::new(AtomicUsize::new(0))),
            arbiters,
            next: AtomicUsize::new(0),
            local_first: false,
            clock,
        }
    }

    /// This registry places a new actor on the calling thread's arbiter when that
    /// thread was marked with [`host_actors_here`], and on the pool otherwise.
    pub(crate) fn local_first(self) -> Self {
        Registry {
            local_first: true,
            ..self
        }
    }

    /// A registry whose actors count the work they owe in their own `busy` counter.
    pub(crate) fn with_busy_counters(arbiters: Vec<ArbiterHandle>, clock: Arc<dyn Clock>) -> Self {
        Registry {
            shared_busy: None,
            ..Self::new(arbiters, clock)
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_millis()).unwrap_or(u64::MAX)
    }

    fn new_slot(&self, now: u64, spawn: Spawn<'_, A>) -> Slot<A> {
        let busy = match &self.shared_busy {
            Some(shared) => shared.clone(),
            None => Arc::new(AtomicUsize::new(0)),
        };
        let addr = match self.local_first.then(local_arbiter).flatten() {
            Some(home) => spawn(&home, busy.clone()),
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
                spawn(&self.arbiters[i], busy.clone())
            }
        };
        Slot {
            addr,
            touched: AtomicU64::new(now),
            busy,
            done: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the live actor for `key` (starting one with `spawn` if there is
    /// none) while holding the entry's lock, so the reaper cannot remove the entry
    /// between the lookup and whatever `f` records (e.g. a `busy` increment).
    pub(crate) fn with_actor<R>(
        &self,
        key: &K,
        spawn: impl FnOnce(&ArbiterHandle, Arc<AtomicUsize>) -> Addr<A>,
        f: impl FnOnce(&Addr<A>, &Arc<AtomicUsize>) -> R,
    ) -> R {
        let now = self.now_ms();
        if let Some(slot) = self.map.get(key) {
            if slot.addr.connected() {
                // Touch under the shard's read lock: the reaper needs the write lock.
                slot.touched.store(now, Ordering::Relaxed);
                return f(&slot.addr, &slot.busy);
            }
        }
        match self.map.entry(key.clone()) {
            Entry::Occupied(o) if o.get().addr.connected() => {
                o.get().touched.store(now, Ordering::Relaxed);
                f(&o.get().addr, &o.get().busy)
            }
            Entry::Occupied(mut o) => {
                o.insert(self.new_slot(now, Box::new(spawn)));
                f(&o.get().addr, &o.get().busy)
            }
            Entry::Vacant(v) => {
                let slot = v.insert(self.new_slot(now, Box::new(spawn)));
                f(&slot.addr, &slot.busy)
            }
        }
    }

    /// Runs `f` when no live actor is registered for `key`, holding the entry's lock
    /// while it runs, so no actor for `key` can start (and load state) until `f`
    /// returns; `None`, without running `f`, when a live actor is registered.
    ///
    /// A writer that works without an actor (the sender's first status of a message)
    /// queues its write inside `f`: an actor started later loads after that write.
    pub(crate) fn without_actor<R>(&self, key: &K, f: impl FnOnce() -> R) -> Option<R> {
        match self.map.entry(key.clone()) {
            Entry::Occupied(o) if o.get().addr.connected() => None,
            Entry::Occupied(o) => {
                // A dead entry (its actor panicked): drop it, still under the lock.
                let result = f();
                o.remove();
                Some(result)
            }
            Entry::Vacant(vacant) => {
                let result = f();
                drop(vacant);
                Some(result)
            }
        }
    }

    /// The live actor for `key`, starting one with `spawn` if there is none.
    pub(crate) fn get_or_spawn(
        &self,
        key: &K,
        spawn: impl FnOnce(&ArbiterHandle, Arc<AtomicUsize>) -> Addr<A>,
    ) -> Addr<A> {
        self.with_actor(key, spawn, |addr, _| addr.clone())
    }

    /// Forgets `addr` for `key` if it is still the registered one.
    pub(crate) fn forget(&self, key: &K, addr: &Addr<A>) {
        self.map.remove_if(key, |_, slot| slot.addr == *addr);
    }

    /// The registered address, if any.
    pub(crate) fn peek(&self, key: &K) -> Option<Addr<A>> {
        self.map.get(key).map(|s| s.addr.clone())
    }

    /// Work the actor for `key` still owes (0 when none is registered).
    pub(crate) fn backlog(&self, key: &K) -> usize {
        self.map
            .get(key)
            .map_or(0, |s| s.busy.load(Ordering::Acquire))
    }

    /// Whether an actor is registered for `key`.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Marks the actor for `key` done: it leaves [`DONE_GRACE_MS`] after its last touch.
    pub(crate) fn mark_done(&self, key: &K) {
        if let Some(slot) = self.map.get(key) {
            slot.done.store(true, Ordering::Release);
        }
    }

    /// Drops entries that owe no work and are idle for at least `idle_secs`
    /// ([`DONE_GRACE_MS`] once done); returns how many.
    pub(crate) fn reap(&self, idle_secs: u64) -> usize {
        let now = self.now_ms();
        let before = self.map.len();
        self.map.retain(|_, slot| {
            let idle = now.saturating_sub(slot.touched.load(Ordering::Relaxed));
            let limit = if slot.done.load(Ordering::Acquire) {
                DONE_GRACE_MS
            } else {
                idle_secs.saturating_mul(1000)
            };
            slot.busy.load(Ordering::Acquire) > 0 || idle < limit
        });
        before.saturating_sub(self.map.len())
    }

    /// Registered actors.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::thread::ThreadId;

    use actix::{Actor, Context, Handler, Message};

    use super::*;
    use crate::clock::SystemClock;

    /// An actor that says which thread it runs on.
    struct Where;

    impl Actor for Where {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "ThreadId")]
    struct Ask;

    impl Handler<Ask> for Where {
        type Result = actix::MessageResult<Ask>;
        fn handle(&mut self, _: Ask, _: &mut Context<Self>) -> Self::Result {
            actix::MessageResult(std::thread::current().id())
        }
    }

    fn spawn(home: &ArbiterHandle, _: Arc<AtomicUsize>) -> Addr<Where> {
        Where::start_in_arbiter(home, |_| Where)
    }

    #[actix_rt::test]
    async fn a_marked_thread_hosts_the_actors_first_called_from_it() {
        let pool = Arbiter::new();
        let here = std::thread::current().id();
        let local =
            Registry::<u32, Where>::new(vec![pool.handle()], Arc::new(SystemClock)).local_first();
        let plain = Registry::<u32, Where>::new(vec![pool.handle()], Arc::new(SystemClock));

        let before = local.get_or_spawn(&1, spawn).send(Ask).await.unwrap();
        assert_ne!(before, here, "an unmarked thread uses the pool");

        host_actors_here();
        let on_marked = local.get_or_spawn(&2, spawn).send(Ask).await.unwrap();
        assert_eq!(on_marked, here, "a marked thread hosts its new actors");
        let existing = local.get_or_spawn(&1, spawn).send(Ask).await.unwrap();
        assert_eq!(existing, before, "an actor never moves");
        let pooled = plain.get_or_spawn(&3, spawn).send(Ask).await.unwrap();
        assert_ne!(pooled, here, "only local_first registries place locally");
        pool.stop();
    }

    #[test]
    fn a_thread_that_is_not_an_arbiter_is_not_marked() {
        let marked = std::thread::spawn(|| {
            host_actors_here();
            HOSTS_ACTORS.with(Cell::get)
        })
        .join()
        .unwrap();
        assert!(!marked);
    }
}
