//! Link state machine. Placeholder.
