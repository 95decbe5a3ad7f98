//! The OTP rules of SPEC section 4, as plain functions over plain state.
//!
//! [`OtpRecord`] is everything otpd knows about one (app, phone): the current flake
//! (code hash, attempts, expiry, callback association) and the recent sends that the
//! per-phone rate limits look at. It is also the snapshot row: persisting an actor
//! means writing its record. The actor (`otp_actor.rs`) owns one record and calls
//! these functions; keeping the rules here makes them testable without a System.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::{serde_ts, to_millis};
use crate::message::Channel;
use crate::phone::Phone;
use crate::secrets::{Digest32, Pepper};

/// Identifies one OTP actor: an app and a canonical phone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtpKey {
    /// The app.
    pub app_id: Uuid,
    /// The canonical phone.
    pub phone: Phone,
}

/// A flake's state (SPEC section 4, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlakeStatus {
    /// Waiting for the right code.
    Pending,
    /// The right code was given (a code is good once).
    Verified,
    /// Max attempts reached.
    Failed,
    /// A verify came after expiry.
    Expired,
    /// Invalidated by the app.
    Invalidated,
}

impl FlakeStatus {
    /// The wire name (also the stored value).
    pub fn as_str(self) -> &'static str {
        match self {
            FlakeStatus::Pending => "pending",
            FlakeStatus::Verified => "verified",
            FlakeStatus::Failed => "failed",
            FlakeStatus::Expired => "expired",
            FlakeStatus::Invalidated => "invalidated",
        }
    }

    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<FlakeStatus> {
        Some(match s {
            "pending" => FlakeStatus::Pending,
            "verified" => FlakeStatus::Verified,
            "failed" => FlakeStatus::Failed,
            "expired" => FlakeStatus::Expired,
            "invalidated" => FlakeStatus::Invalidated,
            _ => return None,
        })
    }
}

/// Where `flake.*` events for a flake go: the per-request callback association.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackTarget {
    /// The policy-checked URL.
    pub url: String,
    /// The signing secret, when one was given.
    pub secret: Option<String>,
}

impl std::fmt::Debug for CallbackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackTarget")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One issued code and what has happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Flake {
    /// Id of this code window.
    pub flake_id: Uuid,
    /// `HMAC(pepper, flake_id ‖ code)`.
    pub code_hash: Digest32,
    /// Stored status (a pending flake past `expires_at` is *reported* as expired).
    pub status: FlakeStatus,
    /// Codes compared so far.
    pub attempts: u32,
    /// Attempts allowed (copied from the app when issued).
    pub max_attempts: u32,
    /// Channel the code went out on.
    pub delivery_method: Channel,
    /// The message carrying the code (`None` for test numbers).
    pub message_id: Option<Uuid>,
    /// Callback association (boxed: most flakes have none, and a live flake's size
    /// is the runtime's memory per phone).
    pub callback: Option<Box<CallbackTarget>>,
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: DateTime<Utc>,
    /// When it was verified, failed, expired or invalidated.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Flake {
    /// The status a caller sees at `now`: pending flakes past expiry read as expired.
    pub fn effective_status(&self, now: DateTime<Utc>) -> FlakeStatus {
        if self.status == FlakeStatus::Pending && now >= self.expires_at {
            FlakeStatus::Expired
        } else {
            self.status
        }
    }

    /// Attempts left.
    pub fn remaining_attempts(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempts)
    }
}

/// Everything known about one (app, phone): the snapshot row.
#[derive(Debug, Clone, PartialEq)]
pub struct OtpRecord {
    /// Whose record.
    pub key: OtpKey,
    /// The current flake, if any was ever issued.
    pub flake: Option<Flake>,
    /// Send times (ms since epoch) within the last hour, oldest first.
    pub sends: VecDeque<i64>,
}

/// How a send's callback association changes (SPEC section 4).
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackChange {
    /// Request without a callback: clear; resend without one: keep.
    Unchanged,
    /// Use this target.
    Set(CallbackTarget),
}

/// Request or resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// `POST /v1/otp/request`: replaces any flake.
    Request,
    /// `POST /v1/otp/resend`: needs a pending flake.
    Resend,
}

/// The view returned by request and resend: never the code.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    /// New flake id.
    pub flake_id: Uuid,
    /// Canonical phone.
    pub phone_number: String,
    /// Channel.
    pub delivery_method: Channel,
    /// Expiry.
    #[serde(with = "serde_ts")]
    pub expires_at: DateTime<Utc>,
    /// The message carrying the code (`null` for test numbers).
    pub message_id: Option<Uuid>,
}

/// The outcome of a verify that found a flake (SPEC section 4's table).
#[derive(Debug, Clone, PartialEq)]
pub enum VerifyOutcome {
    /// Correct code: 200.
    Verified {
        /// Flake.
        flake_id: Uuid,
        /// When.
        verified_at: DateTime<Utc>,
    },
    /// Wrong code with attempts left: 422 `invalid_code`.
    InvalidCode {
        /// Flake.
        flake_id: Uuid,
        /// Attempts left.
        remaining_attempts: u32,
    },
    /// The last attempt was used, now or before: 422 `max_attempts`.
    MaxAttempts {
        /// Flake.
        flake_id: Uuid,
        /// True when this verify used the last attempt (events fire only then).
        just_failed: bool,
        /// When the flake failed.
        failed_at: DateTime<Utc>,
    },
    /// After `expires_at`: 422 `expired`.
    Expired {
        /// Flake.
        flake_id: Uuid,
        /// When it expired.
        expired_at: DateTime<Utc>,
    },
    /// Already verified: 422 `already_verified`.
    AlreadyVerified {
        /// Flake.
        flake_id: Uuid,
    },
}

/// `GET /v1/otp/status`.
#[derive(Debug, Clone, Serialize)]
pub struct FlakeView {
    /// Flake.
    pub flake_id: Uuid,
    /// Canonical phone.
    pub phone_number: String,
    /// Status as seen now.
    pub status: FlakeStatus,
    /// Codes compared.
    pub attempts: u32,
    /// Attempts left.
    pub remaining_attempts: u32,
    /// Expiry.
    #[serde(with = "serde_ts")]
    pub expires_at: DateTime<Utc>,
    /// Channel.
    pub delivery_method: Channel,
    /// The message carrying the code.
    pub message_id: Option<Uuid>,
}

/// What the limits said about a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

/// Seconds (rounded up, at least 1) from `now` until `at`.
pub fn secs_until(now: DateTime<Utc>, at: DateTime<Utc>) -> u64 {
    let ms = (at - now).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

impl OtpRecord {
    /// An empty record for a key never seen.
    pub fn new(key: OtpKey) -> OtpRecord {
        OtpRecord {
            key,
            flake: None,
            sends: VecDeque::new(),
        }
    }

    /// Forgets sends older than an hour.
    pub fn prune_sends(&mut self, now: DateTime<Utc>) {
        let horizon = to_millis(now) - 3_600_000;
        while self.sends.front().is_some_and(|&t| t <= horizon) {
            self.sends.pop_front();
        }
    }

    /// The per-phone limits: cooldown since the last send and sends per rolling hour.
    pub fn check_phone_limits(
        &mut self,
        now: DateTime<Utc>,
        cooldown_secs: u64,
        max_per_hour: u32,
    ) -> Result<(), RetryAfter> {
        self.prune_sends(now);
        let now_ms = to_millis(now);
        if let Some(&last) = self.sends.back() {
            let free_at = last + (cooldown_secs as i64) * 1000;
            if now_ms < free_at {
                return Err(RetryAfter(
                    ((free_at - now_ms) as u64).div_ceil(1000).max(1),
                ));
            }
        }
        if self.sends.len() >= max_per_hour as usize {
            // The oldest send leaving the window frees a slot.
            let oldest = self.sends.front().copied().unwrap_or(now_ms);
            let free_at = oldest + 3_600_000;
            return Err(RetryAfter(
                ((free_at - now_ms).max(0) as u64).div_ceil(1000).max(1),
            ));
        }
        Ok(())
    }

    /// The current flake if it is pending and unexpired.
    pub fn pending_flake(&self, now: DateTime<Utc>) -> Option<&Flake> {
        self.flake
            .as_ref()
            .filter(|f| f.effective_status(now) == FlakeStatus::Pending)
    }

    /// Replaces the flake with a new code window (request or resend).
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &mut self,
        now: DateTime<Utc>,
        pepper: &Pepper,
        code: &str,
        minutes: u32,
        max_attempts: u32,
        delivery_method: Channel,
        message_id: Option<Uuid>,
        callback: Option<CallbackTarget>,
    ) -> &Flake {
        let flake_id = crate::secrets::ordered_id(now);
        self.flake = Some(Flake {
            flake_id,
            code_hash: pepper.hash_code(&flake_id, code),
            status: FlakeStatus::Pending,
            attempts: 0,
            max_attempts,
            delivery_method,
            message_id,
            callback: callback.map(Box::new),
            created_at: now,
            expires_at: now + Duration::minutes(i64::from(minutes)),
            finished_at: None,
        });
        self.flake.as_ref().expect("just set")
    }

    /// Applies one verify. Returns `None` when there is no flake to verify (404),
    /// else the outcome and whether the record changed (and must be persisted).
    pub fn verify(
        &mut self,
        now: DateTime<Utc>,
        pepper: &Pepper,
        code: &str,
    ) -> Option<(VerifyOutcome, bool)> {
        let flake = self.flake.as_mut()?;
        let flake_id = flake.flake_id;
        match flake.status {
            FlakeStatus::Invalidated => None,
            FlakeStatus::Verified => Some((VerifyOutcome::AlreadyVerified { flake_id }, false)),
            FlakeStatus::Failed => Some((
                VerifyOutcome::MaxAttempts {
                    flake_id,
                    just_failed: false,
                    failed_at: flake.finished_at.unwrap_or(now),
                },
                false,
            )),
            FlakeStatus::Expired => Some((
                VerifyOutcome::Expired {
                    flake_id,
                    expired_at: flake.expires_at,
                },
                false,
            )),
            FlakeStatus::Pending if now >= flake.expires_at => {
                flake.status = FlakeStatus::Expired;
                flake.finished_at = Some(now);
                Some((
                    VerifyOutcome::Expired {
                        flake_id,
                        expired_at: flake.expires_at,
                    },
                    true,
                ))
            }
            FlakeStatus::Pending => {
                flake.attempts += 1;
                if pepper.code_matches(&flake_id, code, &flake.code_hash) {
                    flake.status = FlakeStatus::Verified;
                    flake.finished_at = Some(now);
                    Some((
                        VerifyOutcome::Verified {
                            flake_id,
                            verified_at: now,
                        },
                        true,
                    ))
                } else if flake.attempts >= flake.max_attempts {
                    flake.status = FlakeStatus::Failed;
                    flake.finished_at = Some(now);
                    Some((
                        VerifyOutcome::MaxAttempts {
                            flake_id,
                            just_failed: true,
                            failed_at: now,
                        },
                        true,
                    ))
                } else {
                    Some((
                        VerifyOutcome::InvalidCode {
                            flake_id,
                            remaining_attempts: flake.remaining_attempts(),
                        },
                        true,
                    ))
                }
            }
        }
    }

    /// Invalidates a pending flake and clears its callback; `None` when none is pending.
    pub fn invalidate(&mut self, now: DateTime<Utc>) -> Option<Uuid> {
        let flake = self
            .flake
            .as_mut()
            .filter(|f| f.effective_status(now) == FlakeStatus::Pending)?;
        flake.status = FlakeStatus::Invalidated;
        flake.callback = None;
        flake.finished_at = Some(now);
        Some(flake.flake_id)
    }

    /// The status view, if a flake exists.
    pub fn view(&self, now: DateTime<Utc>) -> Option<FlakeView> {
        let f = self.flake.as_ref()?;
        Some(FlakeView {
            flake_id: f.flake_id,
            phone_number: self.key.phone.to_string(),
            status: f.effective_status(now),
            attempts: f.attempts,
            remaining_attempts: f.remaining_attempts(),
            expires_at: f.expires_at,
            delivery_method: f.delivery_method,
            message_id: f.message_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    fn record() -> OtpRecord {
        OtpRecord::new(OtpKey {
            app_id: Uuid::nil(),
            phone: Phone::from_canonical("255712345678").expect("canonical"),
        })
    }

    fn issued(rec: &mut OtpRecord, now: DateTime<Utc>, code: &str, max: u32) -> Uuid {
        let pepper = Pepper::new(b"test-pepper-0123456789");
        rec.issue(now, &pepper, code, 10, max, Channel::Sms, None, None)
            .flake_id
    }

    #[test]
    fn correct_code_verifies_once_then_is_refused() {
        let pepper = Pepper::new(b"test-pepper-0123456789");
        let mut rec = record();
        let t0 = from_millis(1_000_000);
        issued(&mut rec, t0, "123456", 3);
        assert!(matches!(
            rec.verify(t0, &pepper, "123456"),
            Some((VerifyOutcome::Verified { .. }, true))
        ));
        assert!(matches!(
            rec.verify(t0, &pepper, "123456"),
            Some((VerifyOutcome::AlreadyVerified { .. }, false))
        ));
    }

    #[test]
    fn wrong_codes_count_down_then_fail_and_the_right_code_is_refused_after() {
        let pepper = Pepper::new(b"test-pepper-0123456789");
        let mut rec = record();
        let t0 = from_millis(1_000_000);
        issued(&mut rec, t0, "123456", 3);
        assert!(matches!(
            rec.verify(t0, &pepper, "000000"),
            Some((
                VerifyOutcome::InvalidCode {
                    remaining_attempts: 2,
                    ..
                },
                true
            ))
        ));
        assert!(matches!(
            rec.verify(t0, &pepper, "abc"),
            Some((
                VerifyOutcome::InvalidCode {
                    remaining_attempts: 1,
                    ..
                },
                true
            ))
        ));
        assert!(matches!(
            rec.verify(t0, &pepper, "111111"),
            Some((
                VerifyOutcome::MaxAttempts {
                    just_failed: true,
                    ..
                },
                true
            ))
        ));
        assert!(matches!(
            rec.verify(t0, &pepper, "123456"),
            Some((
                VerifyOutcome::MaxAttempts {
                    just_failed: false,
                    ..
                },
                false
            ))
        ));
        assert_eq!(rec.flake.as_ref().map(|f| f.attempts), Some(3));
    }

    #[test]
    fn verify_after_expiry_is_expired_and_compares_nothing() {
        let pepper = Pepper::new(b"test-pepper-0123456789");
        let mut rec = record();
        let t0 = from_millis(1_000_000);
        issued(&mut rec, t0, "123456", 3);
        let late = t0 + Duration::minutes(10);
        assert!(matches!(
            rec.verify(late, &pepper, "123456"),
            Some((VerifyOutcome::Expired { .. }, true))
        ));
        assert_eq!(rec.flake.as_ref().map(|f| f.attempts), Some(0));
        assert!(rec
            .view(late)
            .is_some_and(|v| v.status == FlakeStatus::Expired));
    }

    #[test]
    fn invalidate_clears_callback_and_hides_the_flake_from_verify() {
        let pepper = Pepper::new(b"test-pepper-0123456789");
        let mut rec = record();
        let t0 = from_millis(1_000_000);
        rec.issue(
            t0,
            &pepper,
            "123456",
            10,
            3,
            Channel::Sms,
            None,
            Some(CallbackTarget {
                url: "https://x.example/cb".into(),
                secret: None,
            }),
        );
        assert!(rec.invalidate(t0).is_some());
        assert!(rec.flake.as_ref().is_some_and(|f| f.callback.is_none()));
        assert!(rec.verify(t0, &pepper, "123456").is_none());
        assert!(rec.invalidate(t0).is_none());
    }

    #[test]
    fn cooldown_and_hourly_cap_give_retry_after() {
        let mut rec = record();
        let t0 = from_millis(10_000_000);
        assert!(rec.check_phone_limits(t0, 30, 2).is_ok());
        rec.sends.push_back(to_millis(t0));
        assert_eq!(
            rec.check_phone_limits(t0 + Duration::seconds(10), 30, 2),
            Err(RetryAfter(20))
        );
        let t1 = t0 + Duration::seconds(30);
        assert!(rec.check_phone_limits(t1, 30, 2).is_ok());
        rec.sends.push_back(to_millis(t1));
        let t2 = t1 + Duration::seconds(60);
        assert_eq!(
            rec.check_phone_limits(t2, 30, 2),
            Err(RetryAfter(3600 - 90))
        );
        assert!(rec
            .check_phone_limits(t0 + Duration::seconds(3600), 30, 2)
            .is_ok());
    }
}
