//! DbgKd API messages (kd.md §3). Placeholder until the module lands.
