//! The worker side of hx: task environments, model backends, and the worker's command line.
//! The agent runtime with in-task rewriting, mutation operators and the NATS job loop grow here.

pub mod agent;
pub mod cli;
pub mod env;
pub mod model;
