//! Transport failures, each saying what happened and what to check.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing usable arrived in time; the text names what to check.
    #[error("{0}")]
    ConnectTimeout(String),
    /// KDNET datagrams arrived but none authenticated under the key.
    #[error("{0}")]
    WrongKey(String),
    /// Could not open the port, socket or device.
    #[error("{what}: {source}{hint}")]
    Open {
        what: String,
        hint: String,
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed after the connection was up.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The peer closed the stream.
    #[error("{0} closed the connection")]
    Closed(String),
    /// A protocol-level failure sealing or opening data.
    #[error("{0}")]
    Protocol(#[from] kdproto::Error),
    #[error("{0}")]
    Unsupported(String),
}
