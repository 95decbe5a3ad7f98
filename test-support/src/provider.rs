//! [`CapturingProvider`]: the SMS provider of every test. It records each message
//! it accepts, so a test can read the code sent to a phone, and can be told to
//! refuse (a provider error) or to hang (never answer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use futures::future::BoxFuture;
use futures::FutureExt;
use otpd_actors::{OutboundMessage, Provider, ProviderError, ProviderReceipt};

/// A provider that records every message and can be told to fail or to hang.
///
/// Receipts carry `provider_message_id = "prov-<message id>"`.
#[derive(Default)]
pub struct CapturingProvider {
    sent: Mutex<Vec<OutboundMessage>>,
    fail: AtomicBool,
    hang: AtomicBool,
    calls: AtomicUsize,
}

impl CapturingProvider {
    /// Makes every following send fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Makes every following send hang forever (or answer again).
    pub fn set_hanging(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// How many times `send` was called (accepted, refused or hanging).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<OutboundMessage> {
        self.lock().clone()
    }

    /// How many messages were accepted.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The text of the last message to `phone` (the code, with template `{code}`).
    pub fn last_code(&self, phone: &str) -> Option<String> {
        self.lock()
            .iter()
            .rev()
            .find(|m| m.to == phone)
            .map(|m| m.text.clone())
    }

    /// How many accepted messages went to `phone`.
    pub fn count_to(&self, phone: &str) -> usize {
        self.lock().iter().filter(|m| m.to == phone).count()
    }

    /// The text of the `n`-th (1-based) message to `phone`, if there is one.
    pub fn nth_text(&self, phone: &str, n: usize) -> Option<String> {
        let index = n.checked_sub(1)?;
        self.lock()
            .iter()
            .filter(|m| m.to == phone)
            .nth(index)
            .map(|m| m.text.clone())
    }

    /// Phone → text of the last message to it.
    pub fn codes(&self) -> HashMap<String, String> {
        self.lock()
            .iter()
            .map(|m| (m.to.clone(), m.text.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<OutboundMessage>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Provider for CapturingProvider {
    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<ProviderReceipt, ProviderError>> {
        async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(ProviderError("capturing provider told to fail".into()));
            }
            self.lock().push(message.clone());
            Ok(ProviderReceipt {
                provider_message_id: Some(format!("prov-{}", message.message_id)),
            })
        }
        .boxed()
    }
}
