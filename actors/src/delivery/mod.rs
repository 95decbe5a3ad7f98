//! The delivery engine: webhooks, per-request callbacks and delivery reports, from a
//! committed event to a signed HTTP attempt and its retries.
//!
//! Every delivery is committed (with its event, see [`crate::events::Outbox`]) before
//! the `Dispatcher` hands it to the [`DeliveryActor`](actor::DeliveryActor) of its endpoint (outbox before
//! network). Each endpoint's actor owns its queue, in-flight cap, retry timers and
//! pause, so a slow or dead endpoint only fills its own queue.
//!
//! | file | what lives there |
//! |---|---|
//! | `model.rs` | the records storage persists and the API lists: [`Delivery`], [`DeliveryKind`], [`DeliveryStatus`], [`DeliveryView`], [`AttemptRecord`], [`EndpointKey`]; imports nothing from storage |
//! | `actor.rs` | [`DeliveryActor`](actor::DeliveryActor) (one endpoint's queue, retries, pause) and one signed attempt; the shared `DeliveryContext` |
//! | `dispatcher.rs` | `Dispatcher`: routes deliveries to endpoint actors; [`EndpointHealth`](dispatcher::EndpointHealth) (failures in a row, pause) |
//! | `headers.rs` | `request_headers`: the headers of an attempt, and the delivery log's view of them ([`PER_ATTEMPT`]), one function for both |
//! | `retry.rs` | [`RetrySchedule`]: delays between attempts, shared with the provider sender |

mod actor;
mod dispatcher;
pub(crate) mod headers;
pub(crate) mod model;
mod retry;

pub(crate) use actor::DeliveryContext;
pub(crate) use dispatcher::Dispatcher;
pub use headers::{PER_ATTEMPT, SECRET_NOT_SHOWN};
pub use model::{AttemptRecord, Delivery, DeliveryKind, DeliveryStatus, DeliveryView, EndpointKey};
pub use retry::RetrySchedule;
