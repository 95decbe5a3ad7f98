//! Test support for otpd, shared by `actors/tests`, the black-box `tests/` of the
//! daemon and `otpd-loadtest`: one home for the fixtures that used to be copied.
//!
//! | Module | What lives there |
//! |---|---|
//! | [`provider`] | [`CapturingProvider`]: an `otpd_actors::Provider` that records every message (so a test reads the code) and can be told to fail or hang |
//! | [`handoff`] | [`HandoffProvider`]: the load-test provider, handing each code to the one caller waiting for its message id (no growing log) |
//! | [`receiver`] | [`Receiver`]: a real HTTP server (hyper) on 127.0.0.1, on its own thread, answering from a script and recording each request |
//! | [`wait`] | [`eventually`] (async) and [`eventually_blocking`] / [`poll_blocking`] / [`poll_value`]: bounded real-time polling |
//!
//! Everything here works from async actix tests (`#[actix_rt::test]`) and from
//! plain blocking `#[test]` functions: the receiver runs its own tokio runtime on
//! its own thread, so it never needs the caller's executor.
//!
//! This crate is `publish = false`. It is a dev-dependency of `otpd-actors`, and a
//! normal dependency of `otpd` only because `otpd-loadtest` is a normal binary of
//! that package. That adds no third-party crate to the build (hyper, hyper-util
//! and http-body-util are already there through reqwest; only hyper's server half
//! is turned on), and the `otpd` daemon binary uses nothing from it, so the
//! linker leaves it out.

#![warn(missing_docs)]

pub mod handoff;
pub mod provider;
pub mod receiver;
pub mod wait;

pub use handoff::HandoffProvider;
pub use provider::CapturingProvider;
pub use receiver::{Received, Receiver, ReceiverBuilder, Reply};
pub use wait::{eventually, eventually_blocking, poll_blocking, poll_value};
