//! The registry: which OTP actor owns which (app, phone).
//!
//! A `DashMap` from key to the actor's address, with get-or-spawn under the shard
//! lock, so two concurrent first calls for one key cannot start two writers. A miss
//! starts a supervised actor that rehydrates from SQLite. An entry whose mailbox has
//! closed (the actor panicked: panics are not supervised) is replaced on the next
//! call. The reaper drops entries untouched for `idle_actor_secs`; dropping the last
//! `Addr` stops the actor, so memory follows the live working set.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Addr, ArbiterHandle, Supervisor};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::otp::OtpKey;
use crate::otp_actor::{OtpActor, Shared};

struct Slot {
    addr: Addr<OtpActor>,
    /// Seconds since the registry's epoch when a caller last took this address.
    touched: AtomicU64,
}

/// Map of live OTP actors, spread over a pool of arbiters.
pub(crate) struct Registry {
    map: DashMap<OtpKey, Slot>,
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Registry {
    pub(crate) fn new(arbiters: Vec<ArbiterHandle>) -> Registry {
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

    /// The live actor for `key`, starting one if there is none.
    pub(crate) fn get_or_spawn(&self, key: &OtpKey, shared: &Arc<Shared>) -> Addr<OtpActor> {
        let now = self.now_secs();
        if let Some(slot) = self.map.get(key) {
            if slot.addr.connected() {
                // Touch while holding the shard's read lock: the reaper's removal needs
                // the write lock, so it sees this touch and keeps the entry.
                slot.touched.store(now, Ordering::Relaxed);
                return slot.addr.clone();
            }
        }
        match self.map.entry(key.clone()) {
            Entry::Occupied(o) if o.get().addr.connected() => {
                o.get().touched.store(now, Ordering::Relaxed);
                o.get().addr.clone()
            }
            Entry::Occupied(mut o) => {
                let addr = self.spawn(key, shared);
                o.insert(Slot {
                    addr: addr.clone(),
                    touched: AtomicU64::new(now),
                });
                addr
            }
            Entry::Vacant(v) => {
                let addr = self.spawn(key, shared);
                v.insert(Slot {
                    addr: addr.clone(),
                    touched: AtomicU64::new(now),
                });
                addr
            }
        }
    }

    fn spawn(&self, key: &OtpKey, shared: &Arc<Shared>) -> Addr<OtpActor> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        let key = key.clone();
        let shared = shared.clone();
        Supervisor::start_in_arbiter(&self.arbiters[i], move |_| OtpActor::new(key, shared))
    }

    /// Forgets `addr` for `key` if it is still the registered one (its mailbox closed).
    pub(crate) fn forget(&self, key: &OtpKey, addr: &Addr<OtpActor>) {
        self.map.remove_if(key, |_, slot| slot.addr == *addr);
    }

    /// The registered address, if any (tests and diagnostics).
    pub(crate) fn peek(&self, key: &OtpKey) -> Option<Addr<OtpActor>> {
        self.map.get(key).map(|s| s.addr.clone())
    }

    /// Drops entries idle for at least `idle_secs`; returns how many.
    pub(crate) fn reap(&self, idle_secs: u64) -> usize {
        let now = self.now_secs();
        let before = self.map.len();
        self.map
            .retain(|_, slot| now.saturating_sub(slot.touched.load(Ordering::Relaxed)) < idle_secs);
        before.saturating_sub(self.map.len())
    }

    /// Registered actors.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
