//! Shared core of hx: the harness graph and its substitution algebra, the wire protocol between
//! coordinator and workers, task naming, and the experiment config.
//!
//! Every other hx crate depends on this one, and this one on none of them, so everything
//! the coordinator and the workers must agree on lives here, once. The variation operators
//! that need no model live here too ([`harness::mutate`]), beside the algebra they use.
#![warn(missing_docs)]

pub mod backoff;
pub mod config;
pub mod harness;
pub mod protocol;
pub mod stats;
pub mod task;
pub mod telemetry;

pub use harness::{Harness, HarnessId};
