//! Text and JSON renderings of a decoded capture.

use std::io::{self, Write};

use super::{Content, Decoded, DecodedDatagram};

/// One line per datagram, then the summary.
pub fn write_text(decoded: &Decoded, out: &mut impl Write) -> io::Result<()> {
    for datagram in &decoded.packets {
        writeln!(out, "{}", text_line(datagram))?;
    }
    let s = &decoded.summary;
    writeln!(
        out,
        "{} datagrams: {} authenticated, {} failed authentication, {} not KDNET; {} handshakes, \
         {} KD packets, {} KD errors",
        s.datagrams,
        s.authenticated,
        s.auth_failures,
        s.not_kdnet,
        s.handshakes,
        s.kd_packets,
        s.kd_errors
    )
}

/// Pretty JSON with the documented top-level fields `datagrams`, `authenticated`,
/// `auth_failures` and `packets`.
pub fn write_json(decoded: &Decoded, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, decoded)?;
    writeln!(out)
}

fn text_line(d: &DecodedDatagram) -> String {
    let head = format!(
        "{:>5} {:>11.6} {} -> {} {:<7} {:<12} {:>5}",
        d.frame,
        d.time,
        d.src,
        d.dst,
        d.channel.unwrap_or("-"),
        d.direction.unwrap_or("-"),
        d.seq.map_or_else(|| "-".to_string(), |s| format!("#{s}")),
    );
    let body = match &d.content {
        Content::Poke {
            target,
            host,
            debugger,
        } => format!(
            "POKE target {target} host {host} debugger {}",
            debugger.as_deref().unwrap_or("none")
        ),
        Content::Response => "RESPONSE (new data key)".to_string(),
        Content::ControlOther {
            control_kind,
            length,
        } => format!("control message kind {control_kind} ({length} bytes)"),
        Content::Ping { host } => format!("PING host {host}"),
        Content::BreakIn => "BREAK-IN".to_string(),
        Content::Kd(kd) => kd.to_string(),
        Content::KdError { error } => format!("KD ERROR: {error}"),
        Content::Unreadable { error } => format!("UNAUTHENTICATED: {error}"),
    };
    format!("{head}  {body}")
}
