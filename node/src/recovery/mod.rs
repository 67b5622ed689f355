//! Recovery mechanisms: rate limits for work caused by failure. The
//! failure detector and the replica checker come here too.

pub mod checker;
pub mod detector;
pub mod heartbeat;
pub mod leader;
pub mod sender;
pub mod transfer;
