//! Connection failures end within their timeout with a message that says what to check.

mod session_support;

use std::time::{Duration, Instant};

use kdleak::connect::ConnectSpec;
use kdleak::info::{self, InfoOptions};
use kdleak::session::{Error, SessionOptions};
use kdleak::transport::{kdnet, OpenOptions, TransportError};
use session_support::*;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(15);

fn quick(connect: Duration) -> InfoOptions {
    InfoOptions {
        symbols: Some(fixture_symbols()),
        open: OpenOptions {
            connect_timeout: connect,
            bind: "127.0.0.1".parse().unwrap(),
        },
        session: SessionOptions {
            connect_timeout: connect,
            break_in_interval: Duration::from_millis(200),
            handle_signals: false,
            ..SessionOptions::default()
        },
    }
}

/// A free UDP port on loopback.
async fn free_port() -> u16 {
    let s = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    s.local_addr().unwrap().port()
}

#[tokio::test]
async fn wrong_key_says_check_the_key() {
    timeout(LIMIT, async {
        let port = free_port().await;
        let host = format!("127.0.0.1:{port}").parse().unwrap();
        let _target = kdnet_target(
            host,
            "9.9.9.9",
            Behaviour::default(),
            Duration::from_millis(100),
        );
        let spec: ConnectSpec = format!("net:port={port},key=1.2.3.4").parse().unwrap();
        let started = Instant::now();
        let err = info::run(&spec, &quick(Duration::from_millis(1500)))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        let text = err.to_string();
        assert!(text.contains("none authenticated: check the key"), "{text}");
        assert!(
            !text.contains("9.9.9.9") && !text.contains("1.2.3.4"),
            "{text}"
        );
        assert!(matches!(err, Error::Transport(TransportError::WrongKey(_))));
        assert_eq!(err.exit_code(), 3);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn no_datagrams_names_bcdedit_firewall_and_port() {
    timeout(LIMIT, async {
        let port = free_port().await;
        let spec: ConnectSpec = format!("net:port={port},key=1.2.3.4").parse().unwrap();
        let err = info::run(&spec, &quick(Duration::from_millis(500)))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("no datagrams on UDP port {port}")),
            "{text}"
        );
        assert!(
            text.contains("bcdedit /dbgsettings") && text.contains("firewall"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 3);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn busy_udp_port_is_explained() {
    timeout(LIMIT, async {
        let holder = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = holder.local_addr().unwrap().port();
        let spec: ConnectSpec = format!("net:port={port},key=1.2.3.4").parse().unwrap();
        let err = info::run(&spec, &quick(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already uses UDP port"), "{err}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn nothing_listening_on_a_pipe_is_clear() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.sock");
        let spec: ConnectSpec = format!("com:pipe,port={}", path.display()).parse().unwrap();
        let err = info::run(&spec, &quick(Duration::from_millis(500)))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot connect to serial pipe"), "{text}");
        assert!(text.contains("nothing at that path"), "{text}");
        assert_eq!(err.exit_code(), 3);

        // A stale socket file with no listener behind it.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let spec: ConnectSpec = format!("com:pipe,port={}", stale.display())
            .parse()
            .unwrap();
        let err = info::run(&spec, &quick(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nothing is listening"), "{err}");

        // With reconnect it waits, then times out naming the path.
        let spec: ConnectSpec = format!("com:pipe,port={},reconnect", path.display())
            .parse()
            .unwrap();
        let started = Instant::now();
        let err = info::run(&spec, &quick(Duration::from_millis(600)))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert!(err.to_string().contains("missing.sock"), "{err}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_serial_target_that_never_answers_times_out_with_hints() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kd.sock");
        let target = serial_target(
            &path,
            Behaviour {
                mute: true,
                ..Behaviour::default()
            },
        );
        let spec: ConnectSpec = format!("com:pipe,port={}", path.display()).parse().unwrap();
        let started = Instant::now();
        let err = info::run(&spec, &quick(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        let text = err.to_string();
        assert!(matches!(err, Error::AttachTimeout(_)), "{text}");
        assert!(text.contains("break-in/RESET rounds"), "{text}");
        assert!(text.contains("baud rate"), "{text}");
        assert_eq!(target.observed().stops, 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_kdnet_target_that_never_stops_times_out() {
    timeout(LIMIT, async {
        let port = free_port().await;
        let host = format!("127.0.0.1:{port}").parse().unwrap();
        let _target = kdnet_target(
            host,
            "1.2.3.4",
            Behaviour {
                mute: true,
                ..Behaviour::default()
            },
            Duration::from_millis(100),
        );
        let spec: ConnectSpec = format!("net:port={port},key=1.2.3.4").parse().unwrap();
        let err = info::run(&spec, &quick(Duration::from_secs(1)))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("completed the handshake but sent no state change"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 3);
    })
    .await
    .expect("test timed out");
}
