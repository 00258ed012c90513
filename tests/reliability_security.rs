//! Connection failures and key hygiene (issue 9): a wrong key, the wrong port and no target give
//! actionable errors (exit 3); datagrams spoofed from another address after the handshake are
//! ignored and counted while the pull still gives the exact report; and with trace logging on
//! both sides (`-vvv`, `RUST_LOG=trace`) neither the key string nor its derived key bytes ever
//! appear in any output.

use std::time::Duration;

use kdleak::session::Session;
use kdleak::sim::wire::faults::FaultSpec;
use kdleak::stop::{with_stopped_transport, StopContext};
use kdleak::transport::{kdnet, KdnetTransport, Transport, TransportError};
use kdproto::kdnet::Key;

mod common;
mod reliability_support;
use reliability_support::*;

async fn accept(key: &str, sim_key: Option<&str>, wrong_port: bool) -> TransportError {
    let socket = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut host = socket.local_addr().unwrap();
    if wrong_port {
        host.set_port(common::free_port());
    }
    let _sim = sim_key.map(|k| {
        let mut config = kdleak::sim::wire::kdnet::KdnetConfig::new(host, Key::parse(k).unwrap());
        config.poke_interval = Duration::from_millis(100);
        let (mut reporter, _) = kdleak::sim::Reporter::new(None);
        tokio::spawn(async move {
            kdleak::sim::wire::kdnet::run(
                config,
                machine(image()),
                &mut reporter,
                std::future::pending(),
            )
            .await
        })
    });
    let result = KdnetTransport::accept(
        socket,
        Key::parse(key).unwrap(),
        Duration::from_millis(1500),
    )
    .await;
    if let Some(task) = _sim {
        task.abort();
    }
    match result {
        Ok(_) => panic!("connected"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wrong_key_wrong_port_and_no_target_are_actionable() {
    let wrong = accept("5.6.7.8", Some(KEY), false).await;
    let text = wrong.to_string();
    assert!(matches!(wrong, TransportError::WrongKey(_)), "{text}");
    assert!(text.contains("none authenticated: check the key"), "{text}");
    assert!(!text.contains(KEY) && !text.contains("5.6.7.8"), "{text}");
    assert_eq!(kdleak::session::Error::from(wrong).exit_code(), 3);

    for error in [
        accept(KEY, Some(KEY), true).await,
        accept(KEY, None, false).await,
    ] {
        let text = error.to_string();
        assert!(text.contains("no datagrams on UDP port"), "{text}");
        assert!(text.contains("hostip/port"), "{text}");
        assert_eq!(kdleak::session::Error::from(error).exit_code(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_datagrams_after_the_handshake_are_ignored_and_counted() {
    let baseline = baseline().await;
    let socket = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let host = socket.local_addr().unwrap();
    let sim = Sim::kdnet(host, machine(image()), FaultSpec::default());
    let transport =
        KdnetTransport::accept(socket, Key::parse(KEY).unwrap(), Duration::from_secs(8))
            .await
            .unwrap();
    // Another address floods the host's port: garbage, and copies of real-looking headers.
    let spoofer = tokio::spawn(async move {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut state = 7u64;
        for i in 0u64.. {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut datagram: Vec<u8> = (0..64 + (state >> 58) as usize)
                .map(|j| (state >> (j % 56)) as u8)
                .collect();
            if i % 2 == 0 {
                datagram[..4].copy_from_slice(b"MDBG");
            }
            let _ = socket.send_to(&datagram, host).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let options = stop_options();
    let (report, foreign) = with_stopped_transport(
        Transport::from(transport),
        &options,
        symbols(),
        async |s: &mut Session, c: StopContext| {
            let kernel = kdleak::kernel_context::KernelContext::load(s, &c.symbols).await?;
            let pull = kdleak::verifier::PullOptions {
                connection: c.connection,
                history_limit: 8,
                ..Default::default()
            };
            let report = kdleak::verifier::pull(s, &kernel, &c.symbols, &pull).await?;
            let foreign = match s.transport() {
                Transport::Kdnet(t) => t.stats().foreign_dropped,
                Transport::Stream(_) => 0,
            };
            Ok((report, foreign))
        },
    )
    .await
    .unwrap();
    spoofer.abort();
    assert_eq!(comparable(&report), baseline);
    assert!(foreign > 0, "no spoofed datagram was counted");
    sim.shutdown().await;
}

/// The derived keys as lowercase and uppercase hex, and the key text.
fn secrets(key: &str) -> Vec<String> {
    let k = Key::parse(key).unwrap();
    let hex = hex::encode(k.as_bytes());
    let hmac = hex::encode(k.hmac_key().as_bytes());
    vec![
        key.to_string(),
        hex.clone(),
        hex.to_uppercase(),
        hmac.clone(),
        hmac.to_uppercase(),
        // Any 8-byte window of the key, in case it is logged in parts.
        hex[..16].to_string(),
        hex[48..].to_string(),
    ]
}

#[test]
fn the_key_never_appears_in_trace_logs() {
    let key = "kdleak.secret.key.42";
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut attach = common::kdleak();
    attach
        .env("RUST_LOG", "trace")
        .env("KDLEAK_KEY", key)
        .arg("attach")
        .arg(format!("net:port={port}"))
        .args([
            "-vvv",
            "--no-log",
            "--offline",
            "--format",
            "json",
            "--sympath",
        ])
        .arg(root().join("captures/fixtures/win11-22000"));
    let attach = common::spawn(attach);
    std::thread::sleep(Duration::from_millis(300));
    let mut sim = common::kdleak();
    sim.env("RUST_LOG", "trace")
        .args(["sim", "-vvv", "--scenario", "win11-myfault", "--key", key])
        .args(["--poke-interval", "0.2", "--kdnet"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-file")
        .arg(dir.path().join("state.json"));
    let sim = common::spawn(sim);
    let out = common::finish(attach, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("TRACE") || stderr.contains("trace"),
        "no trace output"
    );
    // Stop the sim and collect its logs too.
    let pid = sim.0.id();
    interrupt(pid);
    let sim_out = common::finish(sim, Duration::from_secs(30));
    let all = [
        stdout,
        stderr,
        String::from_utf8_lossy(&sim_out.stdout).to_string(),
        String::from_utf8_lossy(&sim_out.stderr).to_string(),
    ]
    .concat();
    assert!(all.len() > 10_000, "suspiciously little log output");
    for secret in secrets(key) {
        assert!(
            !all.contains(&secret),
            "the key material {secret:?} was printed"
        );
    }
}

/// SIGINT to the simulator, so it prints its summary and exits.
fn interrupt(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}
