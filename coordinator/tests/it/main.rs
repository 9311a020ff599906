//! The `hx` binary as a user runs it: exit codes, what it prints, and errors that name the
//! file and key at fault.

mod cli;
mod deploy;
mod distributed;
mod model;
mod report;
mod search;
