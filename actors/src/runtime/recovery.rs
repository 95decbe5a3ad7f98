//! Start-up recovery: the rate limiter's last minute, messages left `queued` at the
//! last stop (re-sent; an OTP gets a fresh code) and deliveries still pending.

use super::Runtime;
use crate::error::Error;
use crate::message::{MessageRecord, MessageStatus, Purpose};
use crate::otp::OtpKey;
use crate::otp_actor::ResumeSend;
use crate::phone::Phone;
use crate::sender::PendingSend;
use crate::storage::{self, Change};

impl Runtime {
    pub(super) async fn recover(&self) -> Result<(), Error> {
        let snapshot = &self.inner.shared.snapshot;
        let since = self.inner.shared.clock.now() - chrono::Duration::seconds(60);
        for (app_id, at) in snapshot
            .read(move |c| storage::recent_otp_sends(c, since))
            .await?
        {
            self.inner.shared.limiter.record(app_id, at);
        }
        let queued = snapshot.read(storage::load_queued_messages).await?;
        if !queued.is_empty() {
            tracing::info!(
                count = queued.len(),
                "resuming messages that were queued at the last stop"
            );
        }
        for record in queued {
            if let Err(e) = self.resume(record).await {
                tracing::error!(error = %e, "resuming a queued message failed");
            }
        }
        let pending = snapshot.read(storage::load_pending_deliveries).await?;
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "resuming unfinished deliveries");
        }
        self.dispatch_all(pending);
        Ok(())
    }

    async fn resume(&self, record: MessageRecord) -> Result<(), Error> {
        let Some(app) = self.app(record.app_id) else {
            return Ok(());
        };
        match record.purpose {
            Purpose::Otp => {
                let Some(phone) = Phone::from_canonical(&record.to) else {
                    // otpd stores OTP recipients canonical: this row was not written
                    // by it. Left as it is, for an operator to look at.
                    tracing::warn!(
                        message_id = %record.message_id,
                        "a queued OTP message's recipient is not a canonical number; not resumed"
                    );
                    return Ok(());
                };
                let key = OtpKey {
                    app_id: app.app_id,
                    phone,
                };
                let resumed = self
                    .ask(
                        &key,
                        ResumeSend {
                            app: app.clone(),
                            record: record.clone(),
                        },
                    )
                    .await??;
                match resumed {
                    Some((pending, ticket)) => {
                        ticket.committed().await?;
                        self.inner.sender.dispatch(pending);
                    }
                    None => {
                        let mut superseded = record;
                        superseded.error_code = Some("superseded".into());
                        superseded.error_message =
                            Some("otpd stopped before sending and the OTP was no longer pending at restart".into());
                        superseded.set_status(MessageStatus::Failed, self.inner.shared.clock.now());
                        self.inner
                            .shared
                            .snapshot
                            .write(vec![Change::MessageUpdate(superseded)])
                            .committed()
                            .await?;
                    }
                }
            }
            Purpose::Message => {
                let Some(text) = record.body.clone() else {
                    return Ok(());
                };
                let outbound = crate::provider::OutboundMessage {
                    message_id: record.message_id,
                    channel: record.channel,
                    to: record.to.clone(),
                    text,
                    sender_id: record.sender_id.clone(),
                };
                self.inner.sender.dispatch(PendingSend { record, outbound });
            }
        }
        Ok(())
    }
}
