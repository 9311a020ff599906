//! The worker side of hx: runs jobs (makes the child, with the model for the text operator,
//! and plays its episodes through [`hx_agent`]), the JetStream job loop and the worker's
//! command line. The model engine ([`hx_model`]), the environments ([`hx_env`]), the agent
//! runtime ([`hx_agent`]) and the JetStream plumbing ([`hx_bus`]) are crates of their own.

pub mod cli;
pub mod job;
pub mod mutate;
pub mod nats;
pub mod reflect;
pub mod signal;
