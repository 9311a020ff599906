//! The worker side of hx: task environments, model backends, the agent runtime with in-task
//! rewriting, variation operators, the NATS job loop and the worker's command line.

pub mod agent;
pub mod cli;
pub mod env;
pub mod job;
pub mod model;
pub mod mutate;
pub mod nats;
