//! Shared core of hx: the harness graph and its substitution algebra, the wire protocol between
//! coordinator and workers, task naming, and the experiment config.
//!
//! Both the coordinator and the worker depend on this crate and on nothing of each other's, so
//! everything they must agree on lives here, once.
#![warn(missing_docs)]

pub mod config;
pub mod harness;
pub mod protocol;
pub mod stats;
pub mod task;
pub mod telemetry;

pub use harness::{Harness, HarnessId};
