//! `com:port=DEVICE` through the serialport crate, against the fake target on the master side of
//! a pseudo-terminal, and serial over TCP.

mod session_support;

use std::time::Duration;

use kdleak::connect::ConnectSpec;
use kdleak::info::{self, InfoOptions};
use kdleak::session::SessionOptions;
use kdleak::transport::{serial, OpenOptions};
use serialport::{SerialPort, TTYPort};
use session_support::*;
use tokio::time::timeout;

fn options() -> InfoOptions {
    InfoOptions {
        symbols: Some(fixture_symbols()),
        open: OpenOptions {
            connect_timeout: Duration::from_secs(5),
            ..OpenOptions::default()
        },
        session: SessionOptions {
            connect_timeout: Duration::from_secs(5),
            break_in_interval: Duration::from_millis(300),
            handle_signals: false,
            ..SessionOptions::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn info_over_a_pty() {
    timeout(Duration::from_secs(20), async {
        let (master, slave) = TTYPort::pair().expect("pty pair");
        let device = slave.name().expect("pty name");
        let master: Box<dyn SerialPort> = Box::new(master);
        let target = serial_target_on(serial::bridge(master).unwrap(), Behaviour::default());
        let spec: ConnectSpec = format!("com:port={device},baud=115200").parse().unwrap();
        let info = info::run(&spec, &options()).await.unwrap();
        assert_eq!(info.build, BUILD);
        assert_eq!(info.kernel_base, KERN_BASE);
        assert_eq!(info.modules.modules.len(), 2);
        let o = target.observed();
        assert!(!o.stopped && o.continues == 1, "{o:?}");
        drop(slave);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn info_over_tcp() {
    timeout(Duration::from_secs(20), async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let spec: ConnectSpec = format!("com:tcp,port={addr}").parse().unwrap();
        let host = tokio::spawn(async move { info::run(&spec, &options()).await });
        let target = serial_target_on(accept.await.unwrap(), Behaviour::default());
        let info = host.await.unwrap().unwrap();
        assert_eq!(info.build, BUILD);
        assert_eq!(info.modules.modules[1].name, "hal.dll");
        let o = target.observed();
        assert!(!o.stopped && o.continues == 1, "{o:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_missing_serial_device_is_explained() {
    let spec: ConnectSpec = "com:port=/dev/ttyNOSUCH9,baud=115200".parse().unwrap();
    let err = timeout(Duration::from_secs(10), info::run(&spec, &options()))
        .await
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot open serial port /dev/ttyNOSUCH9"),
        "{text}"
    );
    assert_eq!(err.exit_code(), 3);
}
