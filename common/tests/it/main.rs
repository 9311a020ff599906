//! Integration tests of hx-common: properties of the harness algebra and canonical form,
//! wire-protocol robustness, and every shipped config file.

mod arb;
mod configs;
mod harness_props;
mod protocol_props;
