//! The OTP calls of SPEC section 4 on the runtime: request, resend, verify,
//! invalidate, status, and the `Idempotency-Key` start. Input is validated here
//! (phone, country, ranges, callback URL policy) before it reaches the
//! [`OtpActor`](crate::otp_actor::OtpActor) that owns the (app, phone).

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::Runtime;
use crate::app::App;
use crate::error::Error;
use crate::idempotency::{self, Begin};
use crate::message::Channel;
use crate::otp::{
    CallbackChange, CallbackTarget, FlakeView, IssueKind, Issued, OtpKey, VerifyOutcome,
};
use crate::otp_actor::{Invalidate, Issue, IssueDone, Status, Verify};
use crate::phone::Phone;
use crate::secrets::Digest32;
use crate::telemetry;
use crate::url_policy::UrlPolicyError;

/// `POST /v1/otp/request` and `/resend` input (the phone as the client typed it).
#[derive(Debug, Clone, Default)]
pub struct SendOtp {
    /// Phone in any accepted spelling.
    pub phone_number: String,
    /// Channel (request default sms; resend default: the previous one).
    pub delivery_method: Option<Channel>,
    /// Lifetime override, 1–60.
    pub minutes_to_expire: Option<u32>,
    /// Per-request callback URL.
    pub callback_url: Option<String>,
    /// Its signing secret (1–256 chars).
    pub callback_secret: Option<String>,
}

/// `POST /v1/otp/verify` input.
#[derive(Debug, Clone, Default)]
pub struct VerifyOtp {
    /// Phone in any accepted spelling.
    pub phone_number: String,
    /// The code as typed.
    pub code: String,
    /// Callback target for this verification.
    pub callback_url: Option<String>,
    /// Its secret (the request's secret is reused when absent).
    pub callback_secret: Option<String>,
}

/// A verify's result with the flake's canonical phone.
#[derive(Debug, Clone)]
pub struct VerifyResult {
    /// Canonical phone.
    pub phone_number: String,
    /// What happened.
    pub outcome: VerifyOutcome,
}

impl Runtime {
    /// The actor key for `phone`. Input that is already canonical and names a live
    /// actor was validated when that actor was made, so it skips the (relatively
    /// costly) libphonenumber parse; anything else is parsed and validated.
    fn key(&self, app: &App, phone: &str) -> Result<OtpKey, Error> {
        if let Some(canonical) = Phone::from_canonical(phone) {
            let key = OtpKey {
                app_id: app.app_id,
                phone: canonical,
            };
            if self.inner.registry.contains(&key) {
                return Ok(key);
            }
        }
        let phone = Phone::parse(phone).map_err(|e| Error::InvalidPhoneNumber(e.to_string()))?;
        Ok(OtpKey {
            app_id: app.app_id,
            phone,
        })
    }

    async fn callback_target(
        &self,
        url: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<CallbackTarget>, Error> {
        if let Some(secret) = secret {
            if secret.is_empty() || secret.chars().count() > 256 {
                return Err(Error::Validation(
                    "callback_secret must be 1–256 characters".into(),
                ));
            }
        }
        let Some(url) = url else {
            if secret.is_some() {
                return Err(Error::Validation(
                    "callback_secret needs a callback_url".into(),
                ));
            }
            return Ok(None);
        };
        let parsed = self.check_callback_url(url).await?;
        Ok(Some(CallbackTarget {
            url: parsed.to_string(),
            secret: secret.map(str::to_string),
        }))
    }

    /// Request-time URL policy: syntax and literal addresses always; when the host
    /// resolves, every address must be allowed. A name that does not resolve right
    /// now is accepted: the connect-time check refuses it if it later resolves badly.
    pub async fn check_callback_url(&self, raw: &str) -> Result<url::Url, Error> {
        let policy = &self.inner.policy;
        let url = policy
            .check_url(raw)
            .map_err(|e| Error::InvalidCallbackUrl(format!("callback URL refused: {e}")))?;
        if let Some(url::Host::Domain(_)) = url.host() {
            let resolved =
                tokio::time::timeout(Duration::from_secs(2), policy.check_url_resolved(raw)).await;
            match resolved {
                Ok(Ok(_))
                | Err(_)
                | Ok(Err(UrlPolicyError::ResolveFailed(_) | UrlPolicyError::NoAddresses)) => {}
                Ok(Err(e)) => {
                    return Err(Error::InvalidCallbackUrl(format!(
                        "callback URL refused: {e}"
                    )))
                }
            }
        }
        Ok(url)
    }

    /// The app's `allowed_countries` rule, for OTPs and messages alike.
    pub(crate) fn check_country(app: &App, phone: &Phone) -> Result<(), Error> {
        let allowed = &app.settings.allowed_countries;
        if allowed.is_empty() {
            return Ok(());
        }
        let country = phone.country().unwrap_or_else(|| "unknown".into());
        if allowed.contains(&country) {
            Ok(())
        } else {
            Err(Error::CountryNotAllowed(country))
        }
    }

    async fn issue(&self, app: &Arc<App>, req: SendOtp, kind: IssueKind) -> Result<Issued, Error> {
        let kind_label = match kind {
            IssueKind::Request => "request",
            IssueKind::Resend => "resend",
        };
        let result = self.issue_inner(app, req, kind).await;
        let outcome = match &result {
            Ok(_) => "issued",
            Err(e) => e.code(),
        };
        telemetry::count(
            "otpd_otp_sends_total",
            telemetry::two(("kind", kind_label), ("outcome", outcome)),
            1,
        );
        result
    }

    async fn issue_inner(
        &self,
        app: &Arc<App>,
        req: SendOtp,
        kind: IssueKind,
    ) -> Result<Issued, Error> {
        let key = self.key(app, &req.phone_number)?;
        Self::check_country(app, &key.phone)?;
        let minutes = req
            .minutes_to_expire
            .unwrap_or(app.settings.minutes_to_expire);
        if !(1..=60).contains(&minutes) {
            return Err(Error::Validation(
                "minutes_to_expire must be between 1 and 60".into(),
            ));
        }
        let callback = match self
            .callback_target(req.callback_url.as_deref(), req.callback_secret.as_deref())
            .await?
        {
            Some(target) => CallbackChange::Set(target),
            None => CallbackChange::Unchanged,
        };
        // Most apps have no test numbers: no digits to format then.
        let test_code = if app.settings.test_numbers.is_empty() {
            None
        } else {
            app.settings.test_numbers.get(&*key.phone.digits()).cloned()
        };
        let msg = Issue {
            app: app.clone(),
            kind,
            delivery_method: req.delivery_method,
            minutes,
            callback,
            test_code,
        };
        let IssueDone {
            issued,
            send,
            outbox,
            ticket,
        } = self.ask(&key, msg).await??;
        self.settle(ticket, Some(&key), move |rt| {
            if let Some(send) = send {
                rt.inner.sender.dispatch(send);
            }
            rt.dispatch_all(outbox.deliveries());
        })
        .await?;
        Ok(issued)
    }

    /// Issues a new code for (phone, app), replacing any flake (SPEC section 4).
    pub async fn request(&self, app: &Arc<App>, req: SendOtp) -> Result<Issued, Error> {
        self.issue(app, req, IssueKind::Request).await
    }

    /// Issues a new code for a pending flake, keeping the callback unless a new one is given.
    pub async fn resend(&self, app: &Arc<App>, req: SendOtp) -> Result<Issued, Error> {
        self.issue(app, req, IssueKind::Resend).await
    }

    /// Compares a code; at most `max_attempts` codes are ever compared per flake.
    pub async fn verify(&self, app: &Arc<App>, req: VerifyOtp) -> Result<VerifyResult, Error> {
        let result = self.verify_inner(app, req).await;
        let outcome = match &result {
            Ok(r) => match r.outcome {
                VerifyOutcome::Verified { .. } => "verified",
                VerifyOutcome::InvalidCode { .. } => "invalid_code",
                VerifyOutcome::MaxAttempts { .. } => "max_attempts",
                VerifyOutcome::Expired { .. } => "expired",
                VerifyOutcome::AlreadyVerified { .. } => "already_verified",
            },
            Err(e) => e.code(),
        };
        telemetry::count(
            "otpd_otp_verifications_total",
            telemetry::one("outcome", outcome),
            1,
        );
        result
    }

    async fn verify_inner(&self, app: &Arc<App>, req: VerifyOtp) -> Result<VerifyResult, Error> {
        let key = self.key(app, &req.phone_number)?;

        // Checked before the actor so a bad override uses no attempt; it becomes the
        // callback target of this verification (its secret defaults to the association's).
        let callback_override = self
            .callback_target(req.callback_url.as_deref(), req.callback_secret.as_deref())
            .await?
            .map(|t| (t.url, req.callback_secret.clone()));
        let msg = Verify {
            app_id: app.app_id,
            code: req.code,
            callback_override,
        };
        let verified = self.ask(&key, msg).await??;
        let outbox = verified.outbox;
        self.settle(verified.ticket, Some(&key), move |rt| {
            rt.dispatch_all(outbox.deliveries())
        })
        .await?;
        Ok(VerifyResult {
            phone_number: key.phone.to_string(),
            outcome: verified.outcome,
        })
    }

    /// Invalidates the pending flake and clears its callback association.
    pub async fn invalidate(
        &self,
        app: &Arc<App>,
        phone_number: &str,
    ) -> Result<(Uuid, String), Error> {
        let key = self.key(app, phone_number)?;
        let (flake_id, ticket) = self.ask(&key, Invalidate).await??;
        self.settle(ticket, Some(&key), |_| {}).await?;
        Ok((flake_id, key.phone.to_string()))
    }

    /// The current flake's status.
    pub async fn status(&self, app: &Arc<App>, phone_number: &str) -> Result<FlakeView, Error> {
        let key = self.key(app, phone_number)?;
        self.ask(&key, Status).await?
    }

    // ----- idempotency ------------------------------------------------------

    /// Starts a request carrying an `Idempotency-Key` (see [`idempotency`]).
    pub async fn idempotency_begin(
        &self,
        app_id: Uuid,
        key: &str,
        request_hash: Digest32,
    ) -> Result<Begin, Error> {
        self.check_open()?;
        let now = self.inner.shared.clock.now();
        idempotency::begin(
            &self.inner.idempotency,
            &self.inner.shared.snapshot,
            app_id,
            key,
            request_hash,
            now,
        )
        .await
    }
}
