//! Integration tests of hx-agent: episodes with scripted and real models.

mod agent;
