//! [`HandoffProvider`]: the load-test harness's provider. Instead of keeping every
//! message it hands each code to the one caller waiting for that message id, so a
//! long run holds no growing log. Sharded so many drivers do not contend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use otpd_actors::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
use tokio::sync::oneshot;
use uuid::Uuid;

const SHARDS: usize = 64;

/// One message id's side of the hand-over: whichever side arrived first.
enum Slot {
    /// The caller is waiting for its code.
    Waiting(oneshot::Sender<String>),
    /// The provider was called before the caller asked.
    Ready(String),
}

/// A provider that hands each code back to the caller waiting for its message id.
/// The provider can be called before or after that caller asks, so each slot holds
/// whichever side arrived first. Receipts carry no provider id.
pub struct HandoffProvider {
    capture: bool,
    shards: Vec<Mutex<HashMap<Uuid, Slot>>>,
    sent: AtomicU64,
}

impl HandoffProvider {
    /// A provider that hands codes over (`capture`) or only counts sends.
    /// The text of a message is taken as its code (template `{code}`), trimmed.
    pub fn new(capture: bool) -> HandoffProvider {
        HandoffProvider {
            capture,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            sent: AtomicU64::new(0),
        }
    }

    /// How many messages the runtime sent through this provider.
    pub fn sends(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) for the code of message `id`.
    pub async fn code_for(&self, id: Uuid, timeout: Duration) -> Option<String> {
        let rx = {
            let mut map = self.shard(&id);
            match map.remove(&id) {
                Some(Slot::Ready(code)) => return Some(code),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    map.insert(id, Slot::Waiting(tx));
                    rx
                }
            }
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(code)) => Some(code),
            _ => {
                self.shard(&id).remove(&id);
                None
            }
        }
    }

    fn shard(&self, id: &Uuid) -> MutexGuard<'_, HashMap<Uuid, Slot>> {
        // v4 ids are random: the last byte spreads evenly.
        self.shards[usize::from(id.as_bytes()[15]) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, id: Uuid, code: String) {
        let mut map = self.shard(&id);
        match map.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(code);
            }
            _ => {
                map.insert(id, Slot::Ready(code));
            }
        }
    }
}

impl Provider for HandoffProvider {
    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<ProviderReceipt, ProviderError>> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if self.capture {
            self.deliver(message.message_id, message.text.trim().to_string());
        }
        futures::future::ready(Ok(ProviderReceipt::default())).boxed()
    }
}
