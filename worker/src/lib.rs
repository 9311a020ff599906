//! The worker side of hx: environments, model backends, the agent runtime with in-task
//! rewriting, mutation operators and the NATS job loop grow here. Today it holds the worker's
//! command line and configuration handling.

pub mod cli;
pub mod env;
