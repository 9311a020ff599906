//! The coordinator side of hx: the run store (sled), the search (scheduler, racing,
//! selection), the job buses (in-process and NATS JetStream), export, the transport
//! benchmark, and the `hx` command line. Reports grow here.

/// `println!` that hands back the write's error instead of panicking, so that output into a
/// closed pipe (`hx status RUN | head`) ends the command quietly (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

pub mod agent_bench;
pub mod bus;
pub mod bus_bench;
pub mod cli;
pub mod export;
pub mod live;
pub mod progress;
pub mod propose;
pub mod report;
pub mod search;
pub mod store;
