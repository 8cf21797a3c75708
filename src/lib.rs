//! agentwall: an egress firewall for AI agents.
//!
//! Agents send outbound HTTP through agentwall (forward proxy or reverse routes); every request
//! is identified, normalized, evaluated against TOML policies, audited, and then forwarded or
//! answered with a JSON denial. See `docs/` and DESIGN.md for the contract.

pub mod admin;
pub mod audit;
pub mod config;
pub mod egress;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod tooling;

pub use config::Config;
