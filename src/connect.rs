//! WinDbg `-k`-style connection strings (peers.md §1.2, §5) turned into a [`ConnectSpec`].
//!
//! Accepted forms:
//!
//! * `net:port=P,key=K[,target=HOST]` — KDNET; bind UDP `P` on all interfaces (or `--bind`).
//! * `com:port=/dev/ttyS0[,baud=115200]` — a real serial port.
//! * `com:pipe,port=/path/to/socket[,reconnect][,resets=N]` — a Unix stream socket (a VM's serial pipe).
//! * `com:tcp,port=HOST:PORT` and WinDbg's `com:ipport=PORT,port=HOST` — serial over TCP.
//! * `sim` / `sim:SCENARIO` — the embedded simulated target.
//!
//! Errors name the offending token and what was expected. The key is never repeated in an error:
//! [`KeyError`] only quotes the one bad part.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use kdproto::kdnet::{Key, KeyError};

/// Default serial speed (the fastest rate kd documents).
pub const DEFAULT_BAUD: u32 = 115_200;

/// Where the target is and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub enum ConnectSpec {
    /// KDNET over UDP.
    Net {
        port: u16,
        key: Key,
        /// `target=`: host-initiated connection (kdnet.md §3.5). Parsed, not yet used: the packet
        /// WinDbg sends for it is undocumented.
        target: Option<String>,
    },
    /// A serial device such as `/dev/ttyS0` or `/dev/ttyUSB0`.
    Serial { device: String, baud: u32 },
    /// A Unix stream socket: QEMU/VirtualBox/VMware serial pipes on a Linux host.
    Pipe {
        path: PathBuf,
        /// Wait for the socket to appear (and retry connecting) instead of failing at once.
        reconnect: bool,
        /// `resets=N` (0 = unlimited), kept for WinDbg compatibility.
        resets: Option<u32>,
    },
    /// Serial over TCP (`QEMU -serial tcp:...`).
    Tcp { addr: String },
    /// The embedded simulated target.
    Sim { scenario: Option<String> },
}

/// Key material never reaches a log, even through `{:?}`.
impl fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net { port, target, .. } => f
                .debug_struct("Net")
                .field("port", port)
                .field("key", &"<redacted>")
                .field("target", target)
                .finish(),
            Self::Serial { device, baud } => f
                .debug_struct("Serial")
                .field("device", device)
                .field("baud", baud)
                .finish(),
            Self::Pipe {
                path,
                reconnect,
                resets,
            } => f
                .debug_struct("Pipe")
                .field("path", path)
                .field("reconnect", reconnect)
                .field("resets", resets)
                .finish(),
            Self::Tcp { addr } => f.debug_struct("Tcp").field("addr", addr).finish(),
            Self::Sim { scenario } => f.debug_struct("Sim").field("scenario", scenario).finish(),
        }
    }
}

/// A short description without secrets, for messages ("KDNET on UDP port 50000").
impl fmt::Display for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net { port, .. } => write!(f, "KDNET on UDP port {port}"),
            Self::Serial { device, baud } => write!(f, "serial port {device} at {baud} baud"),
            Self::Pipe { path, .. } => write!(f, "serial pipe {}", path.display()),
            Self::Tcp { addr } => write!(f, "serial over TCP {addr}"),
            Self::Sim { scenario: None } => write!(f, "the simulated target"),
            Self::Sim { scenario: Some(s) } => write!(f, "the simulated target ({s})"),
        }
    }
}

/// Why a connection string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("empty connection string; expected net:port=P,key=K, com:port=DEVICE,baud=B, com:pipe,port=PATH, com:tcp,port=HOST:PORT or sim")]
    Empty,
    #[error("unknown connection type '{0}'; expected net:, com: or sim")]
    UnknownKind(String),
    #[error("'{token}' in the connection string: {expected}")]
    BadToken { token: String, expected: String },
    #[error("the connection string is missing {what}")]
    Missing { what: &'static str },
    #[error("'{option}' given twice in the connection string")]
    Duplicate { option: String },
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl FromStr for ConnectSpec {
    type Err = ConnectError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text, None)
    }
}

impl ConnectSpec {
    /// True for the stream transports (KDCOM framing).
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            Self::Serial { .. } | Self::Pipe { .. } | Self::Tcp { .. }
        )
    }
}

/// Parses a connection string. `key_override` (from `--key`, `--key-file` or the environment) is
/// used when the string has no `key=`, so the key can stay out of the process list.
pub fn parse(text: &str, key_override: Option<Key>) -> Result<ConnectSpec, ConnectError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConnectError::Empty);
    }
    let (kind, rest) = match text.split_once(':') {
        Some((kind, rest)) => (kind, Some(rest)),
        None => (text, None),
    };
    match kind.to_ascii_lowercase().as_str() {
        "net" => parse_net(rest.unwrap_or(""), key_override),
        "com" => parse_com(rest.unwrap_or("")),
        "sim" => Ok(ConnectSpec::Sim {
            scenario: rest
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        }),
        _ => Err(ConnectError::UnknownKind(kind.to_string())),
    }
}

/// The comma-separated options after `kind:`: `name=value` pairs and bare flags, in order.
fn options(rest: &str) -> Result<Vec<(String, Option<&str>)>, ConnectError> {
    let mut out: Vec<(String, Option<&str>)> = Vec::new();
    for token in rest.split(',') {
        let token = token.trim();
        if token.is_empty() {
            continue;
        }
        let (name, value) = match token.split_once('=') {
            Some((name, value)) => (name.trim().to_ascii_lowercase(), Some(value.trim())),
            None => (token.to_ascii_lowercase(), None),
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(ConnectError::Duplicate { option: name });
        }
        out.push((name, value));
    }
    Ok(out)
}

fn bad(token: impl Into<String>, expected: impl Into<String>) -> ConnectError {
    ConnectError::BadToken {
        token: token.into(),
        expected: expected.into(),
    }
}

fn value<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, ConnectError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad(name, format!("expected {name}=VALUE"))),
    }
}

fn parse_net(rest: &str, key_override: Option<Key>) -> Result<ConnectSpec, ConnectError> {
    let mut port = None;
    let mut key = None;
    let mut target = None;
    for (name, v) in options(rest)? {
        match name.as_str() {
            "port" => {
                let v = value("port", v)?;
                port = Some(v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    bad(
                        format!("port={v}"),
                        "expected a UDP port 1-65535 (usually 50000-50039)",
                    )
                })?);
            }
            // The key is parsed here so that only `KeyError`'s redacted text can leave.
            "key" => key = Some(Key::parse(value("key", v)?)?),
            "target" => target = Some(value("target", v)?.to_string()),
            _ => {
                return Err(bad(
                    shown(&name, v),
                    "expected port=, key= or target= after net:",
                ))
            }
        }
    }
    Ok(ConnectSpec::Net {
        port: port.ok_or(ConnectError::Missing {
            what: "port= (the UDP port from bcdedit /dbgsettings net ... port:P)",
        })?,
        key: key.or(key_override).ok_or(ConnectError::Missing {
            what: "key= (or --key / --key-file / KDLEAK_KEY)",
        })?,
        target,
    })
}

/// `name=value` for an error message; never called for the key.
fn shown(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}"),
        None => name.to_string(),
    }
}

fn parse_com(rest: &str) -> Result<ConnectSpec, ConnectError> {
    let opts = options(rest)?;
    let flag = |n: &str| opts.iter().any(|(name, v)| name == n && v.is_none());
    let get = |n: &str| opts.iter().find(|(name, _)| name == n).map(|(_, v)| *v);
    let (pipe, tcp) = (flag("pipe"), flag("tcp"));
    if pipe && tcp {
        return Err(bad("pipe,tcp", "expected only one of pipe or tcp"));
    }
    let mut baud = DEFAULT_BAUD;
    let mut resets = None;
    for (name, v) in &opts {
        match (name.as_str(), v) {
            ("pipe" | "tcp" | "reconnect", None) => {}
            ("port" | "ipport", Some(_)) => {}
            ("baud", v) => {
                let v = value("baud", *v)?;
                baud =
                    v.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                        bad(format!("baud={v}"), "expected a speed such as 115200")
                    })?;
            }
            ("resets", v) => {
                let v = value("resets", *v)?;
                resets =
                    Some(v.parse().map_err(|_| {
                        bad(format!("resets={v}"), "expected a count (0 = unlimited)")
                    })?);
            }
            _ => {
                return Err(bad(
                    shown(name, *v),
                    "expected pipe, tcp, reconnect, port=, ipport=, baud= or resets= after com:",
                ))
            }
        }
    }
    if flag("reconnect") && !pipe {
        return Err(bad("reconnect", "reconnect is only valid with com:pipe"));
    }
    let port = match get("port") {
        Some(v) => value("port", v)?.to_string(),
        None => {
            return Err(ConnectError::Missing {
                what: "port= (a device, pipe path or HOST:PORT)",
            })
        }
    };
    if let Some(ipport) = get("ipport") {
        // WinDbg: com:ipport=SerialTcpIpPort,port=SerialIPAddress.
        let ipport = value("ipport", ipport)?;
        if pipe {
            return Err(bad("ipport", "ipport= is not valid with com:pipe"));
        }
        let n: u16 = ipport
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("ipport={ipport}"), "expected a TCP port 1-65535"))?;
        return Ok(ConnectSpec::Tcp {
            addr: join_host_port(&port, n),
        });
    }
    if pipe {
        return Ok(ConnectSpec::Pipe {
            path: PathBuf::from(port),
            reconnect: flag("reconnect"),
            resets,
        });
    }
    if tcp {
        let ok = port
            .rsplit_once(':')
            .is_some_and(|(host, p)| !host.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !ok {
            return Err(bad(
                format!("port={port}"),
                "expected HOST:PORT after com:tcp",
            ));
        }
        return Ok(ConnectSpec::Tcp { addr: port });
    }
    if port.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad(
            format!("port={port}"),
            "expected a serial device such as /dev/ttyS0 (not just a number)",
        ));
    }
    Ok(ConnectSpec::Serial { device: port, baud })
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::parse("1.2.3.4").unwrap()
    }

    #[test]
    fn net_with_key_and_target() {
        let spec: ConnectSpec = "net:port=50000,key=1.2.3.4,target=10.0.0.5"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            ConnectSpec::Net {
                port: 50000,
                key: key(),
                target: Some("10.0.0.5".into())
            }
        );
        assert!(!spec.is_stream());
        assert_eq!(spec.to_string(), "KDNET on UDP port 50000");
    }

    #[test]
    fn net_debug_never_shows_the_key() {
        let spec = parse("net:port=50000,key=abcdefghijk.2.3.4", None).unwrap();
        let text = format!("{spec:?} {spec}");
        assert!(!text.contains("abcdefghijk"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn net_key_from_override() {
        let spec = parse("NET:port=50001", Some(key())).unwrap();
        assert!(matches!(spec, ConnectSpec::Net { port: 50001, .. }));
        let err = parse("net:port=50001", None).unwrap_err();
        assert!(err.to_string().contains("key="), "{err}");
    }

    #[test]
    fn net_errors_name_the_token() {
        let err = parse("net:port=abc,key=1.2.3.4", None).unwrap_err();
        assert!(err.to_string().contains("'port=abc'"), "{err}");
        let err = parse("net:port=5,key=1.2.3.4,colour=red", None).unwrap_err();
        assert!(err.to_string().contains("'colour=red'"), "{err}");
        let err = parse("net:key=1.2.3.4", None).unwrap_err();
        assert!(err.to_string().contains("port="), "{err}");
        let err = parse("net:port=5,key=1.2.3", None).unwrap_err();
        assert!(matches!(
            err,
            ConnectError::Key(KeyError::PartCount { parts: 3 })
        ));
        let err = parse("net:port=5,port=6,key=1.2.3.4", None).unwrap_err();
        assert_eq!(
            err,
            ConnectError::Duplicate {
                option: "port".into()
            }
        );
    }

    #[test]
    fn serial_device_and_baud() {
        assert_eq!(
            parse("com:port=/dev/ttyS0,baud=57600", None).unwrap(),
            ConnectSpec::Serial {
                device: "/dev/ttyS0".into(),
                baud: 57600
            }
        );
        assert_eq!(
            parse("com:port=/dev/ttyUSB1", None).unwrap(),
            ConnectSpec::Serial {
                device: "/dev/ttyUSB1".into(),
                baud: DEFAULT_BAUD
            }
        );
        let err = parse("com:port=2", None).unwrap_err();
        assert!(err.to_string().contains("'port=2'"), "{err}");
        let err = parse("com:port=/dev/ttyS0,baud=fast", None).unwrap_err();
        assert!(err.to_string().contains("'baud=fast'"), "{err}");
    }

    #[test]
    fn pipe_and_reconnect() {
        assert_eq!(
            parse("com:pipe,port=/tmp/vm.sock,reconnect,resets=0", None).unwrap(),
            ConnectSpec::Pipe {
                path: "/tmp/vm.sock".into(),
                reconnect: true,
                resets: Some(0)
            }
        );
        let spec = parse("com:pipe,port=/tmp/vm.sock", None).unwrap();
        assert!(spec.is_stream());
        assert!(matches!(
            spec,
            ConnectSpec::Pipe {
                reconnect: false,
                ..
            }
        ));
        let err = parse("com:port=/dev/ttyS0,reconnect", None).unwrap_err();
        assert!(err.to_string().contains("'reconnect'"), "{err}");
        let err = parse("com:pipe", None).unwrap_err();
        assert!(matches!(err, ConnectError::Missing { .. }));
    }

    #[test]
    fn tcp_both_spellings() {
        assert_eq!(
            parse("com:tcp,port=127.0.0.1:5555", None).unwrap(),
            ConnectSpec::Tcp {
                addr: "127.0.0.1:5555".into()
            }
        );
        assert_eq!(
            parse("com:ipport=5555,port=vmhost", None).unwrap(),
            ConnectSpec::Tcp {
                addr: "vmhost:5555".into()
            }
        );
        assert_eq!(
            parse("com:ipport=5555,port=::1", None).unwrap(),
            ConnectSpec::Tcp {
                addr: "[::1]:5555".into()
            }
        );
        let err = parse("com:tcp,port=localhost", None).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        let err = parse("com:pipe,tcp,port=x:1", None).unwrap_err();
        assert!(err.to_string().contains("pipe,tcp"), "{err}");
    }

    #[test]
    fn sim_and_unknown() {
        assert_eq!(
            parse("sim", None).unwrap(),
            ConnectSpec::Sim { scenario: None }
        );
        assert_eq!(
            parse("sim:win10", None).unwrap(),
            ConnectSpec::Sim {
                scenario: Some("win10".into())
            }
        );
        assert_eq!(
            parse("usb:targetname=x", None).unwrap_err(),
            ConnectError::UnknownKind("usb".into())
        );
        assert_eq!(parse("  ", None).unwrap_err(), ConnectError::Empty);
    }
}
