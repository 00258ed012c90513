use crate::kdnet::Direction;

/// Which end of the link this is: the debugger (host) or the debuggee (target). Host and
/// simulated target drive the same code with different roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Host,
    Target,
}

impl Role {
    /// The KDNET direction bit of everything this role sends (kdnet.md §1.3).
    pub fn sends(self) -> Direction {
        match self {
            Self::Host => Direction::HostToTarget,
            Self::Target => Direction::TargetToHost,
        }
    }
}
