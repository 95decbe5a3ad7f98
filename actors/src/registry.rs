//! The registry: which actor owns which key (an (app, phone) or a delivery endpoint).
//!
//! A `DashMap` from key to the actor's address, with get-or-spawn under the shard
//! lock, so two concurrent first calls for one key cannot start two writers. A new
//! actor is placed on the next arbiter of the pool (one per core). An entry whose
//! mailbox has closed (the actor panicked: panics are not supervised) is replaced on
//! the next call. The reaper drops entries that are idle — untouched for the idle
//! time and owing no work (`busy == 0`); dropping the last `Addr` stops the actor,
//! so memory follows the live working set.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Addr, ArbiterHandle};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

struct Slot<A: Actor> {
    addr: Addr<A>,
    /// Seconds since the registry's epoch when a caller last took this address.
    touched: AtomicU64,
    /// Work the actor still owes (queued or in-flight deliveries); never reaped while > 0.
    busy: Arc<AtomicUsize>,
}

/// Map of live actors of one kind, spread over a pool of arbiters.
pub(crate) struct Registry<K, A: Actor> {
    map: DashMap<K, Slot<A>>,
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
    epoch: Instant,
}

impl<K: Hash + Eq + Clone, A: Actor> Registry<K, A> {
    pub(crate) fn new(arbiters: Vec<ArbiterHandle>) -> Self {
        Registry {
            map: DashMap::new(),
            arbiters,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
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
        let now = self.now_secs();
        if let Some(slot) = self.map.get(key) {
            if slot.addr.connected() {
                // Touch under the shard's read lock: the reaper needs the write lock.
                slot.touched.store(now, Ordering::Relaxed);
                return f(&slot.addr, &slot.busy);
            }
        }
        let new_slot =
            |spawn: Box<dyn FnOnce(&ArbiterHandle, Arc<AtomicUsize>) -> Addr<A> + '_>| {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
                let busy = Arc::new(AtomicUsize::new(0));
                let addr = spawn(&self.arbiters[i], busy.clone());
                Slot {
                    addr,
                    touched: AtomicU64::new(now),
                    busy,
                }
            };
        match self.map.entry(key.clone()) {
            Entry::Occupied(o) if o.get().addr.connected() => {
                o.get().touched.store(now, Ordering::Relaxed);
                f(&o.get().addr, &o.get().busy)
            }
            Entry::Occupied(mut o) => {
                o.insert(new_slot(Box::new(spawn)));
                f(&o.get().addr, &o.get().busy)
            }
            Entry::Vacant(v) => {
                let slot = v.insert(new_slot(Box::new(spawn)));
                f(&slot.addr, &slot.busy)
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

    /// Forgets `addr` for `key` if it is still the registered one (its mailbox closed).
    pub(crate) fn forget(&self, key: &K, addr: &Addr<A>) {
        self.map.remove_if(key, |_, slot| slot.addr == *addr);
    }

    /// The registered address, if any.
    pub(crate) fn peek(&self, key: &K) -> Option<Addr<A>> {
        self.map.get(key).map(|s| s.addr.clone())
    }

    /// Drops entries idle for at least `idle_secs` that owe no work; returns how many.
    pub(crate) fn reap(&self, idle_secs: u64) -> usize {
        let now = self.now_secs();
        let before = self.map.len();
        self.map.retain(|_, slot| {
            slot.busy.load(Ordering::Acquire) > 0
                || now.saturating_sub(slot.touched.load(Ordering::Relaxed)) < idle_secs
        });
        before.saturating_sub(self.map.len())
    }

    /// Registered actors.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
