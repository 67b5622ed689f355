//! Recovery mechanisms: rate limits for work caused by failure. The
//! failure detector and the replica checker come here too.

pub mod token_bucket;
