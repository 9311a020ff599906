//! Integration tests of hx-worker: the binary and the variation operators with jobs.

mod cli;
mod mutate;
mod reflect;
