//! Integration tests of hx-env: the built-in suites' rules and an external adapter process.

mod alfworld;
mod blocks;
mod external;
mod household;
mod scienceworld;
