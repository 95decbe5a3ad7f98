//! # otpd
//!
//! The otpd daemon: an actix-web HTTP API, configuration and command line in front of
//! the `otpd-actors` runtime. Any actix-web application can mount the API (and the
//! web console at `/console`) with [`api::configure`].
//!
//! ## Layout
//!
//! | path | what lives there |
//! |---|---|
//! | `src/main.rs` | the `otpd` binary: clap subcommands, thin |
//! | `src/config.rs` | layered configuration: defaults → TOML file → `OTPD_SECTION__KEY` env |
//! | `src/server.rs` | `otpd serve`: start the runtime, seed apps, run the HTTP server, shut down cleanly |
//! | `src/api/` | one module per API resource; errors mapped to the envelope in one place |
//! | `src/console/` | the web console at `/console`: static files compiled in, calling `/v1` with an app's key |
//! | `src/backup.rs` | `otpd backup`: an online, consistent copy of the live database |
//! | `src/logging.rs` | the stderr log: filter, text or JSON lines, written by their own thread |
//! | `src/echo.rs` | `otpd echo`: a local receiver that prints each delivery and checks its signatures |
//! | `src/stdout.rs` | `print_stdout`: what scripts read (listening line, created keys), one flushed write |
//! | `src/bin/otpd-loadtest/` | the load-test harness: drives the runtime in-process, no HTTP (`main.rs` arguments and the run, `drive.rs` the OTP cycle drivers, `deliveries.rs` delivery mode, `measure.rs` tallies, CPU and memory readings) |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod backup;
pub mod config;
pub mod console;
pub mod echo;
pub mod logging;
pub mod server;
mod stdout;
