//! The operator's tools shared by the `levee` binary and the benchmark
//! runner (`levee-bench`, a crate above this one): a local cluster of
//! `levee-node` processes, each optionally held to a CPU quota, and the
//! control socket through which `levee local ctl` acts on its nodes.

pub mod cpu_quota;
pub mod local_cluster;
pub mod local_ctl;
