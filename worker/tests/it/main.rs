//! Integration tests of hx-worker: the binary, and the task suites.

mod cli;
mod household;
