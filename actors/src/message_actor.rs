//! `MessageActor`: the one writer for one message's status.
//!
//! Provider results (from the sender) and provider status reports (from the API)
//! both go through the message's actor, so concurrent or out-of-order reports are
//! applied one at a time against the status-rank guard and can never regress a
//! status or emit an event twice. An applied status is committed together with its
//! events — `<channel>.<status>` for the app's channel webhook and the per-message
//! delivery report — and those are dispatched only after the commit.
//!
//! Actors are started on demand (a report for a message not in memory rehydrates it
//! from SQLite) and leave memory the registry's done-grace (`DONE_GRACE_MS`, two
//! seconds of the runtime clock) after their last update, final or not.
//!
//! The sender's first status of a message (the provider's receipt, right after the
//! queued record was committed) needs no actor: when no actor is live for the
//! message, [`MessageRouter::apply`] applies it to the committed record it holds,
//! with the same rule, while the registry holds the key (so a report's actor started
//! later loads after that write). One actor per sent message, alive for two seconds,
//! was most of the runtime's actors and memory under load.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::Durability;
use crate::delivery::{Delivery, DeliveryKind, Dispatcher};
use crate::error::Error;
use crate::events::outbox::Outbox;
use crate::events::{Event, ServiceType};
use crate::message::{status_applies, Channel, MessageRecord, MessageStatus, ReportType};
use crate::registry::Registry;
use crate::storage::{load_message_any, Change, Snapshot, Ticket};
use crate::webhooks::WebhookDirectory;

/// A status to apply to a message.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// The new status.
    pub status: MessageStatus,
    /// Machine-readable reason (`failed`).
    pub error_code: Option<String>,
    /// Human reason (`failed`).
    pub error_message: Option<String>,
    /// The provider's id, when it first becomes known.
    pub provider_message_id: Option<String>,
    /// Provider calls made (from the sender).
    pub attempts: Option<u32>,
}

impl StatusUpdate {
    /// A bare status.
    pub fn status(status: MessageStatus) -> StatusUpdate {
        StatusUpdate {
            status,
            error_code: None,
            error_message: None,
            provider_message_id: None,
            attempts: None,
        }
    }
}

/// `POST /v1/providers/status` answer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Applied {
    /// Whether the status changed anything.
    pub applied: bool,
    /// The message's status after the report.
    pub status: MessageStatus,
}

/// What message actors share.
pub(crate) struct MessageContext {
    pub(crate) snapshot: Snapshot,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) webhooks: Arc<WebhookDirectory>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) durability: Durability,
}

/// The actor. See the module docs.
pub struct MessageActor {
    id: Uuid,
    /// `None` until loaded, or when no such message exists.
    record: Option<MessageRecord>,
    shared: Arc<MessageContext>,
}

impl Actor for MessageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let snapshot = self.shared.snapshot.clone();
        let id = self.id;
        let load = async move { snapshot.read(move |conn| load_message_any(conn, &id)).await };
        ctx.wait(load.into_actor(self).map(|result, act, _| match result {
            Ok(record) => act.record = record,
            Err(e) => tracing::error!(error = %e, message_id = %act.id, "loading a message failed"),
        }));
    }
}

#[derive(Debug, Clone)]
struct Apply(StatusUpdate);

impl Message for Apply {
    type Result = Result<(Applied, Outbox, Ticket), Error>;
}

impl Handler<Apply> for MessageActor {
    type Result = Result<(Applied, Outbox, Ticket), Error>;

    fn handle(&mut self, Apply(update): Apply, ctx: &mut Self::Context) -> Self::Result {
        let Some(rec) = self.record.as_mut() else {
            // Unknown message (or a failed load): stop so the next call reloads.
            ctx.stop();
            return Err(Error::NotFound("no such message".into()));
        };
        Ok(apply_update(&self.shared, rec, update, Await::Always))
    }
}

/// Whether the caller of [`apply_update`] waits for the commit of the new status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Await {
    /// Always: an actor keeps the record in memory, which must not run ahead of a
    /// failed commit.
    Always,
    /// Only when there are events to dispatch after it (outbox before network).
    /// Otherwise nothing follows the commit, so the write is queued with no answer
    /// to wait for: no reply, and no task kept alive to receive it. A failed commit
    /// is logged by the writer, and leaves the message `queued` in storage, as a
    /// crash before the commit would.
    ForEvents,
}

/// Applies `update` to `rec` under the status-rank guard and queues the commit of
/// the new record with its events. The one place a status is applied: the actor's
/// handler and the sender's actor-less first status both call it.
fn apply_update(
    shared: &MessageContext,
    rec: &mut MessageRecord,
    update: StatusUpdate,
    wait: Await,
) -> (Applied, Outbox, Ticket) {
    if !status_applies(rec.channel, rec.status, update.status) {
        let applied = Applied {
            applied: false,
            status: rec.status,
        };
        return (applied, Outbox::default(), Ticket::done());
    }
    let now = shared.clock.now();
    if update.status == MessageStatus::Failed {
        rec.error_code = update.error_code.or_else(|| Some("failed".into()));
        rec.error_message = update.error_message;
    }
    rec.set_status(update.status, now);
    if rec.provider_message_id.is_none() {
        rec.provider_message_id = update.provider_message_id;
    }
    if let Some(attempts) = update.attempts {
        rec.attempts = attempts;
    }
    let outbox = status_events(&shared.webhooks, rec, now);
    let mut changes = vec![Change::MessageUpdate(rec.clone())];
    changes.extend(outbox.changes());
    let ticket = if wait == Await::ForEvents && outbox.is_empty() {
        shared.snapshot.write_unawaited(changes);
        Ticket::done()
    } else {
        shared.snapshot.write(changes)
    };
    let applied = Applied {
        applied: true,
        status: rec.status,
    };
    (applied, outbox, ticket)
}

/// `<channel>.<status>` for the channel webhook and the delivery report, if wanted.
fn status_events(webhooks: &WebhookDirectory, rec: &MessageRecord, now: DateTime<Utc>) -> Outbox {
    let mut outbox = Outbox::default();
    let service_type = ServiceType::from(rec.channel);
    let name = status_event(rec.channel, rec.status);
    outbox.webhook_event(webhooks, rec.app_id, service_type, name, now, || {
        let mut data = Map::new();
        data.insert("message_id".into(), json!(rec.message_id));
        data.insert("to".into(), json!(rec.to));
        data.insert("status".into(), json!(rec.status.as_str()));
        if let Some(s) = &rec.sender_id {
            data.insert("sender_id".into(), json!(s));
        }
        if let Some(c) = &rec.error_code {
            data.insert("error_code".into(), json!(c));
        }
        if let Some(m) = &rec.error_message {
            data.insert("error_message".into(), json!(m));
        }
        Value::Object(data)
    });
    if let Some(target) = rec
        .report
        .as_ref()
        .filter(|t| t.report_type.wants(rec.status))
    {
        let is_final = ReportType::is_final_report(rec.status);
        let mut body = Map::new();
        body.insert("message_id".into(), json!(rec.message_id));
        body.insert(
            "delivery_report_type".into(),
            json!(target.report_type.as_str()),
        );
        body.insert("is_final".into(), json!(is_final));
        body.insert("channel".into(), json!(rec.channel.as_str()));
        body.insert("status".into(), json!(rec.status.as_str()));
        if rec.status == MessageStatus::Failed {
            let reason = rec.error_message.clone().or_else(|| rec.error_code.clone());
            body.insert("reason".into(), json!(reason));
        }
        if let Some(s) = &rec.sender_id {
            body.insert("sender_id".into(), json!(s));
        }
        let rendered = serde_json::to_string(&Value::Object(body)).unwrap_or_default();
        let event = Event::with_body(name, service_type, rec.app_id, now, rendered);
        let mut d = Delivery::new(
            &event,
            DeliveryKind::Report,
            target.url.clone(),
            None,
            target.secret.clone(),
        );
        d.report_secret = target.secret.is_some();
        outbox.items.push((event, vec![d]));
    }
    outbox
}

/// The event name of a message status, `<channel>.<status>`, without formatting it
/// for every status (most have no webhook or report to go to).
fn status_event(channel: Channel, status: MessageStatus) -> &'static str {
    use MessageStatus::*;
    match (channel, status) {
        (Channel::Sms, Queued) => "sms.queued",
        (Channel::Sms, Sent) => "sms.sent",
        (Channel::Sms, Delivered) => "sms.delivered",
        (Channel::Sms, Read) => "sms.read",
        (Channel::Sms, Failed) => "sms.failed",
        (Channel::Whatsapp, Queued) => "whatsapp.queued",
        (Channel::Whatsapp, Sent) => "whatsapp.sent",
        (Channel::Whatsapp, Delivered) => "whatsapp.delivered",
        (Channel::Whatsapp, Read) => "whatsapp.read",
        (Channel::Whatsapp, Failed) => "whatsapp.failed",
        (Channel::Telegram, Queued) => "telegram.queued",
        (Channel::Telegram, Sent) => "telegram.sent",
        (Channel::Telegram, Delivered) => "telegram.delivered",
        (Channel::Telegram, Read) => "telegram.read",
        (Channel::Telegram, Failed) => "telegram.failed",
    }
}

/// Routes status updates to message actors and settles their commits.
pub(crate) struct MessageRouter {
    registry: Registry<Uuid, MessageActor>,
    shared: Arc<MessageContext>,
}

impl MessageRouter {
    pub(crate) fn new(shared: MessageContext, arbiters: Vec<ArbiterHandle>) -> MessageRouter {
        MessageRouter {
            registry: Registry::new(arbiters, shared.clock.clone()),
            shared: Arc::new(shared),
        }
    }

    /// Applies `update` to message `id`; after the commit, the events are dispatched.
    ///
    /// `seed` is the message as committed, when the caller knows that no other update
    /// can have been applied and forgotten since (the sender within `SEED_WITHIN`,
    /// 0.9 s of clock time, of the commit: an actor made by a report in that time is
    /// still registered for its done-grace, and wins over the seed). With a seed and
    /// no live actor, the update is applied to the seed right here, with no actor at
    /// all: [`Registry::without_actor`] holds the key while the write is queued, so an
    /// actor a report starts later loads after it. That is the common case (the
    /// provider's receipt of an OTP message) and it costs no actor, no mailbox hop and
    /// no memory. Otherwise the update goes through the message's actor, which
    /// serializes it with concurrent reports and leaves memory after the done-grace.
    pub(crate) async fn apply(
        &self,
        id: Uuid,
        update: StatusUpdate,
        mut seed: Option<MessageRecord>,
    ) -> Result<Applied, Error> {
        if let Some(mut record) = seed.take() {
            let inline = self.registry.without_actor(&id, || {
                apply_update(&self.shared, &mut record, update.clone(), Await::ForEvents)
            });
            // `None`: a report's actor is live; it holds newer state than the seed.
            if let Some((applied, outbox, ticket)) = inline {
                let dispatcher = self.shared.dispatcher.clone();
                ticket
                    .settle(
                        self.shared.durability,
                        move || outbox.deliveries().for_each(|d| dispatcher.dispatch(d)),
                        || {},
                    )
                    .await
                    .map_err(Error::Storage)?;
                return Ok(applied);
            }
        }
        for _ in 0..3 {
            let shared = self.shared.clone();
            let addr = self.registry.get_or_spawn(&id, |arbiter, _| {
                MessageActor::start_in_arbiter(arbiter, move |_| MessageActor {
                    id,
                    record: None,
                    shared,
                })
            });
            match addr.send(Apply(update.clone())).await {
                Ok(Ok((applied, outbox, ticket))) => {
                    let dispatcher = self.shared.dispatcher.clone();
                    let settled = ticket
                        .settle(
                            self.shared.durability,
                            move || outbox.deliveries().for_each(|d| dispatcher.dispatch(d)),
                            || {},
                        )
                        .await;
                    if let Err(e) = settled {
                        // Memory is ahead of storage: drop the actor so the next report reloads.
                        self.registry.forget(&id, &addr);
                        return Err(Error::Storage(e));
                    }
                    // The actor only serializes concurrent updates; the state is in
                    // SQLite. It leaves after the done-grace (2 s) without updates, so memory
                    // follows in-flight reports, not messages awaiting a receipt.
                    self.registry.mark_done(&id);
                    return Ok(applied);
                }
                Ok(Err(e)) => {
                    self.registry.forget(&id, &addr);
                    return Err(e);
                }
                Err(_) => self.registry.forget(&id, &addr),
            }
        }
        Err(Error::Unavailable(
            "the message actor is not answering; try again".into(),
        ))
    }

    /// Drops idle and finished message actors.
    pub(crate) fn reap(&self, idle_secs: u64) -> usize {
        self.registry.reap(idle_secs)
    }

    /// Message actors alive.
    pub(crate) fn actors(&self) -> usize {
        self.registry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_event_names_are_channel_dot_status() {
        use MessageStatus::*;
        for channel in [Channel::Sms, Channel::Whatsapp, Channel::Telegram] {
            for status in [Queued, Sent, Delivered, Read, Failed] {
                assert_eq!(
                    status_event(channel, status),
                    format!("{}.{}", channel.as_str(), status.as_str())
                );
            }
        }
        assert!(ServiceType::Whatsapp
            .active_events()
            .contains(&status_event(Channel::Whatsapp, Read)));
    }
}
