//! Integration tests of hx-worker: the binary, the task suites, and external environments.

mod agent;
mod blocks;
mod cli;
mod external;
mod household;
mod mutate;
