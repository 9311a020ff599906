//! The coordinator side of hx: today the `hx` command line over the shared core; the
//! population store, scheduler, job bus and reports grow here.

pub mod bus;
pub mod cli;
pub mod search;
pub mod store;
