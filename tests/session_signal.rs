//! SIGINT and SIGTERM while broken in mid-read: the target is resumed before the error returns.
//! Its own test binary, because signals go to the whole process.

mod session_support;

use std::time::Duration;

use kdleak::connect::ConnectSpec;
use kdleak::session::{Error, Session, SessionOptions};
use kdleak::transport::{self, OpenOptions};
use session_support::*;
use tokio::time::timeout;

fn kill(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn interrupted_mid_read(signal: &'static str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kd.sock");
    let target = serial_target(&path, Behaviour::default());
    let spec = ConnectSpec::Pipe {
        path,
        reconnect: false,
        resets: None,
    };
    let t = transport::open(&spec, &OpenOptions::default())
        .await
        .unwrap();
    let options = SessionOptions {
        connect_timeout: Duration::from_secs(5),
        break_in_interval: Duration::from_millis(300),
        handle_signals: true,
        ..SessionOptions::default()
    };
    let mut session = Session::attach(t, options).await.unwrap();
    let err = session
        .run_stopped(async |s: &mut Session| -> kdleak::session::Result<()> {
            let mut address = KERN_BASE;
            for i in 0.. {
                s.read_virtual(address, 0x100).await?;
                address += 0x1000;
                if i == 2 {
                    kill(signal);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted(n) if n == name), "{err}");
    assert_eq!(err.exit_code(), 130);
    let o = target.observed();
    assert!(!o.stopped && o.continues == 1, "{o:?}");
}

#[tokio::test]
async fn sigint_and_sigterm_resume_the_target() {
    timeout(Duration::from_secs(20), async {
        interrupted_mid_read("-INT", "SIGINT").await;
        interrupted_mid_read("-TERM", "SIGTERM").await;
    })
    .await
    .expect("test timed out");
}
