//! `OtpActor`: the one writer for one (app, phone).
//!
//! All mutations of a flake go through this actor's mailbox, so attempt counting is
//! exact without locks however many verifies race. Each handler runs the rules in
//! `otp.rs` synchronously, queues the new snapshot with the writer and returns a
//! [`Ticket`]; the caller (the `Runtime`) awaits the ticket before acknowledging, so
//! the actor itself never awaits I/O between messages.
//!
//! The actor runs under an actix `Supervisor`. It loads its record in `started` with
//! `ctx.wait`, which holds back every message until the load is done. If a commit
//! fails, the runtime sends [`Reload`]: the actor stops, the supervisor restarts it
//! on the same mailbox, and `started` reloads the last committed snapshot, dropping
//! whatever the failed commit would have changed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use uuid::Uuid;

use crate::app::App;
use crate::clock::{to_millis, Clock};
use crate::error::Error;
use crate::events::outbox::Outbox;
use crate::events::{self, ServiceType};
use crate::message::{Channel, MessageRecord, Purpose};
use crate::otp::{
    CallbackChange, CallbackTarget, FlakeView, IssueKind, Issued, OtpKey, OtpRecord, VerifyOutcome,
};
use crate::provider::OutboundMessage;
use crate::ratelimit::AppLimiter;
use crate::secrets::{generate_code, Pepper};
use crate::sender::PendingSend;
use crate::storage::{load_otp, Change, Snapshot, Ticket};
use crate::webhooks::WebhookDirectory;

/// What every OTP actor shares: time, storage, the pepper and the app-wide limiter.
pub(crate) struct OtpContext {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) snapshot: Snapshot,
    pub(crate) pepper: Pepper,
    pub(crate) limiter: AppLimiter,
    /// Actor structs alive right now (a restart keeps the same struct).
    pub(crate) live_actors: AtomicI64,
    /// Registered webhooks (events are addressed when they are created).
    pub(crate) webhooks: Arc<WebhookDirectory>,
}

/// The actor. See the module docs.
pub struct OtpActor {
    /// The snapshot, which also holds the actor's key. Only meaningful once `loaded`.
    ///
    /// The key lives only here (not in a field of its own) because the actor is
    /// stored inline in its task, one per live flake: see docs/benchmarks-passes.md, "Third pass".
    record: OtpRecord,
    /// Whether `record` holds the loaded snapshot (false until the load finished, and
    /// after a failed load or a restart).
    loaded: bool,
    /// Whether the record's row is known to exist (loaded, or written since): the
    /// next snapshot is then an `UPDATE` rather than an upsert.
    stored: bool,
    shared: Arc<OtpContext>,
}

impl OtpActor {
    pub(crate) fn new(key: OtpKey, shared: Arc<OtpContext>) -> OtpActor {
        shared.live_actors.fetch_add(1, Ordering::Relaxed);
        OtpActor {
            record: OtpRecord::new(key),
            loaded: false,
            stored: false,
            shared,
        }
    }

    /// The loaded record, or a refusal that also restarts the actor to retry the load.
    fn loaded(&mut self, ctx: &mut Context<Self>) -> Result<&mut OtpRecord, Error> {
        if !self.loaded {
            ctx.stop();
            return Err(Error::Unavailable(
                "state could not be loaded; try again".into(),
            ));
        }
        Ok(&mut self.record)
    }

    fn persist(&mut self, mut changes: Vec<Change>) -> Ticket {
        if self.loaded {
            let rec = &self.record;
            let change = if self.stored {
                Change::OtpUpdate(rec.clone())
            } else {
                Change::Otp(rec.clone())
            };
            changes.insert(0, change);
            // If this commit fails the actor reloads, and sets `stored` from the row.
            self.stored = true;
        }
        self.shared.snapshot.write(changes)
    }
}

impl Drop for OtpActor {
    fn drop(&mut self) {
        self.shared.live_actors.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Actor for OtpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let snapshot = self.shared.snapshot.clone();
        let key = self.record.key.clone();
        let load = async move { snapshot.read(move |conn| load_otp(conn, &key)).await };
        ctx.wait(load.into_actor(self).map(|result, act, _| match result {
            Ok(record) => {
                // Every snapshot written carries its flake: a record without one was
                // never stored.
                act.stored = record.flake.is_some();
                act.record = record;
                act.loaded = true;
            }
            Err(e) => {
                tracing::error!(error = %e, app_id = %act.record.key.app_id, "loading OTP state failed");
                act.loaded = false;
            }
        }));
    }
}

impl Supervised for OtpActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::info!(app_id = %self.record.key.app_id, "OTP actor restarting from its snapshot");
        self.loaded = false;
    }
}

/// Issue a new code (request or resend). Rate limits are checked here.
#[derive(Debug, Clone)]
pub struct Issue {
    /// The app (its settings at the time of the call).
    pub app: Arc<App>,
    /// Request or resend.
    pub kind: IssueKind,
    /// Channel; `None` = sms for a request, the previous channel for a resend.
    pub delivery_method: Option<Channel>,
    /// Lifetime in minutes (already validated).
    pub minutes: u32,
    /// How the callback association changes.
    pub callback: CallbackChange,
    /// Fixed code for a test number (no message, no rate limits).
    pub test_code: Option<String>,
}

/// What an issue did: the view, the message to send and the events, all to be
/// released once the ticket's commit is done.
#[derive(Debug)]
pub struct IssueDone {
    /// The response.
    pub issued: Issued,
    /// The message carrying the code (none for test numbers).
    pub send: Option<PendingSend>,
    /// `otp.created` for the app's webhook.
    pub outbox: Outbox,
    /// Commit of all of it.
    pub ticket: Ticket,
}

impl Message for Issue {
    type Result = Result<IssueDone, Error>;
}

impl Handler<Issue> for OtpActor {
    type Result = Result<IssueDone, Error>;

    fn handle(&mut self, msg: Issue, ctx: &mut Self::Context) -> Self::Result {
        let now = self.shared.clock.now();
        let shared = self.shared.clone();
        let phone = self.record.key.phone.to_string();
        let rec = self.loaded(ctx)?;
        let previous = rec.pending_flake(now).cloned();
        if msg.kind == IssueKind::Resend && previous.is_none() {
            return Err(Error::NotFound(
                "no pending OTP for this phone number and app".into(),
            ));
        }
        let settings = &msg.app.settings;
        if msg.test_code.is_none() {
            rec.check_phone_limits(
                now,
                settings.resend_cooldown_secs,
                settings.max_sends_per_hour,
            )
            .map_err(|r| Error::RateLimited {
                retry_after_secs: r.0,
            })?;
            shared
                .limiter
                .try_acquire(msg.app.app_id, now, settings.max_sends_per_minute)
                .map_err(|r| Error::RateLimited {
                    retry_after_secs: r.0,
                })?;
            // Most phones send once an hour or less: no room for four to start with.
            if rec.sends.capacity() == 0 {
                rec.sends.reserve_exact(1);
            }
            rec.sends.push_back(to_millis(now));
        }
        let callback = match (msg.kind, msg.callback) {
            (_, CallbackChange::Set(target)) => Some(target),
            (IssueKind::Request, CallbackChange::Unchanged) => None,
            (IssueKind::Resend, CallbackChange::Unchanged) => previous
                .as_ref()
                .and_then(|f| f.callback.as_deref().cloned()),
        };
        let channel = msg
            .delivery_method
            .or_else(|| {
                previous
                    .as_ref()
                    .filter(|_| msg.kind == IssueKind::Resend)
                    .map(|f| f.delivery_method)
            })
            .unwrap_or_default();
        let code = msg
            .test_code
            .clone()
            .unwrap_or_else(|| generate_code(settings.code_length));
        let message_id = msg
            .test_code
            .is_none()
            .then(|| crate::secrets::ordered_id(now));
        let flake = rec.issue(
            now,
            &shared.pepper,
            &code,
            msg.minutes,
            settings.max_attempts,
            channel,
            message_id,
            callback,
        );
        let issued = Issued {
            flake_id: flake.flake_id,
            phone_number: phone.clone(),
            delivery_method: channel,
            expires_at: flake.expires_at,
            message_id,
        };
        let mut changes = Vec::new();
        let pending = message_id.map(|message_id| {
            let record = MessageRecord {
                sender_id: settings.sender_id.clone(),
                ..MessageRecord::queued(
                    message_id,
                    msg.app.app_id,
                    channel,
                    phone.clone(),
                    Purpose::Otp,
                    now,
                )
            };
            changes.push(Change::Message(record.clone()));
            let outbound = OutboundMessage {
                message_id,
                channel,
                to: phone,
                text: settings.render_message(&code, msg.minutes),
                sender_id: settings.sender_id.clone(),
            };
            PendingSend { record, outbound }
        });
        let mut outbox = Outbox::default();
        outbox.webhook_event(
            &shared.webhooks,
            msg.app.app_id,
            ServiceType::Otp,
            "otp.created",
            now,
            || {
                events::otp_created(
                    issued.flake_id,
                    &issued.phone_number,
                    channel.as_str(),
                    issued.expires_at,
                )
            },
        );
        changes.extend(outbox.changes());
        let ticket = self.persist(changes);
        Ok(IssueDone {
            issued,
            send: pending,
            outbox,
            ticket,
        })
    }
}

/// Compare a code.
#[derive(Debug, Clone)]
pub struct Verify {
    /// The app.
    pub app_id: Uuid,
    /// The code as typed (any string; wrong formats count as wrong codes).
    pub code: String,
    /// A callback target for this verification only: URL and, optionally, a secret
    /// (the association's secret is reused when absent).
    pub callback_override: Option<(String, Option<String>)>,
}

/// What a verify did, for the runtime to acknowledge and dispatch.
#[derive(Debug)]
pub struct Verified {
    /// The outcome.
    pub outcome: VerifyOutcome,
    /// Events to deliver once committed.
    pub outbox: Outbox,
    /// Commit of the change (done when nothing changed).
    pub ticket: Ticket,
}

impl Message for Verify {
    type Result = Result<Verified, Error>;
}

impl Handler<Verify> for OtpActor {
    type Result = Result<Verified, Error>;

    fn handle(&mut self, msg: Verify, ctx: &mut Self::Context) -> Self::Result {
        let now = self.shared.clock.now();
        let pepper = self.shared.pepper.clone();
        let rec = self.loaded(ctx)?;
        let Some((outcome, changed)) = rec.verify(now, &pepper, &msg.code) else {
            return Err(Error::NotFound(
                "no OTP for this phone number and app".into(),
            ));
        };
        let association = rec
            .flake
            .as_ref()
            .and_then(|f| f.callback.as_deref().cloned());
        let target = match msg.callback_override {
            Some((url, secret)) => Some(CallbackTarget {
                url,
                secret: secret.or_else(|| association.and_then(|a| a.secret)),
            }),
            None => association,
        };
        let outbox = verify_events(
            &self.shared.webhooks,
            msg.app_id,
            &self.record.key.phone.digits(),
            &outcome,
            target.as_ref(),
            now,
        );
        let ticket = if changed || !outbox.is_empty() {
            self.persist(outbox.changes())
        } else {
            Ticket::done()
        };
        Ok(Verified {
            outcome,
            outbox,
            ticket,
        })
    }
}

/// The events a verify outcome emits (SPEC section 5): `otp.*` to the app's webhook,
/// `flake.*` to the callback target.
fn verify_events(
    webhooks: &WebhookDirectory,
    app_id: Uuid,
    phone: &str,
    outcome: &VerifyOutcome,
    target: Option<&CallbackTarget>,
    now: chrono::DateTime<chrono::Utc>,
) -> Outbox {
    let mut outbox = Outbox::default();
    match outcome {
        VerifyOutcome::Verified {
            flake_id,
            verified_at,
        } => {
            outbox.webhook_event(
                webhooks,
                app_id,
                ServiceType::Otp,
                "otp.verified",
                now,
                || events::otp_verified(*flake_id, phone, *verified_at),
            );
            if let Some(t) = target {
                let data = events::flake_verified(*flake_id, phone, *verified_at);
                outbox.callback_event(app_id, t, "flake.verified", now, data);
            }
        }
        VerifyOutcome::InvalidCode {
            flake_id,
            remaining_attempts,
        } => {
            outbox.webhook_event(
                webhooks,
                app_id,
                ServiceType::Otp,
                "otp.failed",
                now,
                || events::otp_failed(*flake_id, phone, "invalid_code", *remaining_attempts, now),
            );
        }
        VerifyOutcome::MaxAttempts {
            flake_id,
            just_failed: true,
            failed_at,
        } => {
            outbox.webhook_event(
                webhooks,
                app_id,
                ServiceType::Otp,
                "otp.failed",
                now,
                || events::otp_failed(*flake_id, phone, "max_attempts", 0, *failed_at),
            );
            if let Some(t) = target {
                let data = events::flake_failed(*flake_id, phone, *failed_at);
                outbox.callback_event(app_id, t, "flake.failed", now, data);
            }
        }
        VerifyOutcome::Expired {
            flake_id,
            expired_at,
        } => {
            outbox.webhook_event(
                webhooks,
                app_id,
                ServiceType::Otp,
                "otp.expired",
                now,
                || events::otp_expired(*flake_id, phone, *expired_at),
            );
        }
        VerifyOutcome::MaxAttempts {
            just_failed: false, ..
        }
        | VerifyOutcome::AlreadyVerified { .. } => {}
    }
    outbox
}

/// Invalidate the pending flake.
#[derive(Debug, Clone)]
pub struct Invalidate;

impl Message for Invalidate {
    type Result = Result<(Uuid, Ticket), Error>;
}

impl Handler<Invalidate> for OtpActor {
    type Result = Result<(Uuid, Ticket), Error>;

    fn handle(&mut self, _: Invalidate, ctx: &mut Self::Context) -> Self::Result {
        let now = self.shared.clock.now();
        let rec = self.loaded(ctx)?;
        let flake_id = rec.invalidate(now).ok_or_else(|| {
            Error::NotFound("no pending OTP for this phone number and app".into())
        })?;
        Ok((flake_id, self.persist(Vec::new())))
    }
}

/// Read the flake's status.
#[derive(Debug, Clone)]
pub struct Status;

impl Message for Status {
    type Result = Result<FlakeView, Error>;
}

impl Handler<Status> for OtpActor {
    type Result = Result<FlakeView, Error>;

    fn handle(&mut self, _: Status, ctx: &mut Self::Context) -> Self::Result {
        let now = self.shared.clock.now();
        let rec = self.loaded(ctx)?;
        rec.view(now)
            .ok_or_else(|| Error::NotFound("no OTP for this phone number and app".into()))
    }
}

/// Start-up recovery of an OTP message that was queued but never handed over.
///
/// The code was never stored, so the actor issues a fresh code under the same flake
/// (same id, expiry and attempts) and returns the send. If the flake has moved on
/// (verified, replaced, expired), there is nothing to resend: `None`.
#[derive(Debug, Clone)]
pub struct ResumeSend {
    /// The app.
    pub app: Arc<App>,
    /// The queued message.
    pub record: MessageRecord,
}

impl Message for ResumeSend {
    type Result = Result<Option<(PendingSend, Ticket)>, Error>;
}

impl Handler<ResumeSend> for OtpActor {
    type Result = Result<Option<(PendingSend, Ticket)>, Error>;

    fn handle(&mut self, msg: ResumeSend, ctx: &mut Self::Context) -> Self::Result {
        let now = self.shared.clock.now();
        let pepper = self.shared.pepper.clone();
        let rec = self.loaded(ctx)?;
        let Some(flake) = rec.flake.as_mut() else {
            return Ok(None);
        };
        if flake.effective_status(now) != crate::otp::FlakeStatus::Pending
            || flake.message_id != Some(msg.record.message_id)
        {
            return Ok(None);
        }
        let settings = &msg.app.settings;
        let code = generate_code(settings.code_length);
        flake.code_hash = pepper.hash_code(&flake.flake_id, &code);
        let minutes_left = (flake.expires_at - now).num_minutes().max(1) as u32;
        let outbound = OutboundMessage {
            message_id: msg.record.message_id,
            channel: msg.record.channel,
            to: msg.record.to.clone(),
            text: settings.render_message(&code, minutes_left),
            sender_id: msg.record.sender_id.clone(),
        };
        let ticket = self.persist(Vec::new());
        Ok(Some((
            PendingSend {
                record: msg.record,
                outbound,
            },
            ticket,
        )))
    }
}

/// Drop in-memory state and restart from the last committed snapshot (sent by the
/// runtime after a failed commit).
#[derive(Debug, Clone, Copy)]
pub struct Reload;

impl Message for Reload {
    type Result = ();
}

impl Handler<Reload> for OtpActor {
    type Result = ();

    fn handle(&mut self, _: Reload, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::OtpActor;

    /// One actor per live flake, stored inline in its tokio task, whose cell is rounded
    /// up to 128 bytes: at 200 bytes the whole task is five such lines rather than six
    /// (docs/benchmarks-passes.md, "Third pass"). Growing it past 200 bytes costs another 128
    /// bytes per live flake.
    #[test]
    fn the_actor_stays_small() {
        assert!(
            std::mem::size_of::<OtpActor>() <= 200,
            "OtpActor is {} bytes",
            std::mem::size_of::<OtpActor>()
        );
    }
}
