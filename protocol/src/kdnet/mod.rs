//! KDNET (kdnet.md). Placeholder until the module lands.

/// Which side sent a datagram (kdnet.md §1.3: flag bit 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    TargetToHost,
    HostToTarget,
}

/// A key string that is not four base-36 parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad KDNET key")]
pub struct KeyError;
