//! levee-node: the levee server, its wire protocol and the client library.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of modules and
//! the path of a request.

#![warn(missing_docs)]

pub mod admission;
pub mod client;
pub mod cluster;
pub mod config;
pub mod data;
pub mod failpoint;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hlc;
pub mod log_repeats;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod proto;
pub mod raft;
pub mod recovery;
pub mod server;
pub mod startup;
pub mod storage;
pub mod tls;
pub mod token_bucket;
pub mod units;
