//! The coordinator side of hx: the run store (sled), the search (scheduler, racing,
//! selection), the job bus, export, and the `hx` command line. Distributed transport and
//! reports grow here.

pub mod bus;
pub mod cli;
pub mod export;
pub mod search;
pub mod store;
