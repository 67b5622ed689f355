//! The replicated data path: quorum writes and reads coordinated by a
//! replica of the key's partition, read repair, hinted handoff and
//! anti-entropy.

pub mod anti_entropy;
pub mod coordinator;
pub mod handoff;
pub mod quorum;
