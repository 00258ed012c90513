//! What the simulator counts and tells: [`stats`] — its counters and run state in a serialisable
//! form; [`report`] — publishes them to in-process observers and the `--state-file`. Transports
//! count into them; `kdleak sim` prints the final summary.

pub mod report;
pub mod stats;
