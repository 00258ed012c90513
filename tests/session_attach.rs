//! Host session against an in-test fake target over real loopback UDP (KDNET) and a Unix socket
//! (KDCOM): attach, GetVersion, KDBG, module list, reads, and the resume guarantee.

mod session_support;

use std::net::SocketAddr;
use std::time::Duration;

use kdleak::connect::ConnectSpec;
use kdleak::info::{self, InfoOptions};
use kdleak::session::{Error, Session, SessionOptions};
use kdleak::transport::{self, kdnet, KdnetTransport, OpenOptions, Transport};
use kdproto::api::ApiNumber;
use kdproto::kdnet::Key;
use session_support::*;
use tokio::time::timeout;

const KEY: &str = "1.2.3.4";
const LIMIT: Duration = Duration::from_secs(20);

fn options() -> SessionOptions {
    SessionOptions {
        connect_timeout: Duration::from_secs(5),
        break_in_interval: Duration::from_millis(300),
        request_timeout: Duration::from_secs(3),
        resume_timeout: Duration::from_secs(3),
        handle_signals: false,
        ..SessionOptions::default()
    }
}

fn info_options() -> InfoOptions {
    InfoOptions {
        symbols: Some(fixture_symbols()),
        open: OpenOptions {
            connect_timeout: Duration::from_secs(5),
            ..OpenOptions::default()
        },
        session: options(),
    }
}

/// Binds the host port first (kdnet.md §7: start the host before the target), then starts a
/// target poking it, then completes the handshake.
async fn kdnet_pair(behaviour: Behaviour) -> (Transport, FakeTarget) {
    let socket = kdnet::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let host: SocketAddr = socket.local_addr().unwrap();
    let target = kdnet_target(host, KEY, behaviour, Duration::from_millis(200));
    let transport =
        KdnetTransport::accept(socket, Key::parse(KEY).unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
    (Transport::from(transport), target)
}

fn check_info(info: &info::TargetInfo) {
    assert_eq!(info.build, BUILD);
    assert_eq!(info.machine, "x64");
    assert_eq!(info.kernel_base, KERN_BASE);
    assert_eq!(info.kdbg_address, Some(KDBG));
    assert_eq!(info.kdbg_size, Some(0x380));
    assert!(info.kdbg_problems.is_empty(), "{:?}", info.kdbg_problems);
    assert_eq!(info.processors, 2);
    assert_eq!(info.stop.program_counter, BREAK_PC);
    assert!(info.modules.complete, "{:?}", info.modules.problem);
    let names: Vec<_> = info
        .modules
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["ntoskrnl.exe", "hal.dll"]);
    let nt = &info.modules.modules[0];
    assert_eq!(nt.base, KERN_BASE);
    assert_eq!(nt.end(), KERN_BASE + 0x0100_0000);
    let pdb = nt.pdb.as_ref().expect("ntoskrnl RSDS");
    assert_eq!(pdb.path, "d:\\os\\obj\\amd64fre\\ntkrnlmp.pdb");
    assert_eq!(pdb.file_name(), "ntkrnlmp.pdb");
    assert_eq!(pdb.guid, "11111111-1111-1111-1111-111111111111");
    assert_eq!(pdb.age, 1);
    assert_eq!(info.modules.modules[1].pdb.as_ref().unwrap().age, 2);
    assert!(info.resumed);
    assert_eq!(info.debug_output, ["fake target says hello\n"]);
    let text = info.render_text();
    assert!(text.contains("fffff803`12400000"), "{text}");
    assert!(text.contains("ntkrnlmp.pdb"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&info.render_json()).unwrap();
    assert_eq!(json["kernel_base"], "0xfffff80312400000");
    assert_eq!(json["modules"]["modules"][1]["name"], "hal.dll");
}

fn assert_running(target: &FakeTarget) {
    let o = target.observed();
    assert!(!o.stopped, "target left stopped: {o:?}");
    assert_eq!(o.continues, 1, "{o:?}");
}

#[tokio::test]
async fn kdnet_info_reads_everything_and_resumes() {
    timeout(LIMIT, async {
        let (transport, target) = kdnet_pair(Behaviour::default()).await;
        let info = info::run_on(transport, &info_options()).await.unwrap();
        check_info(&info);
        assert_running(&target);
        // Continue2 echoes the Dr7 the stop reported.
        assert_eq!(target.observed().last_dr7, Some(0x400));
        // KDNET reads stay at or under 1 KiB.
        assert!(target
            .observed()
            .requests
            .iter()
            .all(|(_, _, len)| *len <= 0x400));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn pipe_info_reads_everything_and_resumes() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kd.sock");
        let target = serial_target(&path, Behaviour::default());
        let spec: ConnectSpec = format!("com:pipe,port={}", path.display()).parse().unwrap();
        let info = info::run(&spec, &info_options()).await.unwrap();
        check_info(&info);
        assert_running(&target);
        assert!(target
            .observed()
            .requests
            .iter()
            .all(|(_, _, len)| *len <= 0x800));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn stale_replies_are_skipped_and_short_reads_continue() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kd.sock");
        let behaviour = Behaviour {
            stale_first: true,
            max_read: 0x300,
            ..Behaviour::default()
        };
        let target = serial_target(&path, behaviour);
        let info = info::run(
            &format!("com:pipe,port={}", path.display()).parse().unwrap(),
            &info_options(),
        )
        .await
        .unwrap();
        check_info(&info);
        assert_running(&target);
    })
    .await
    .expect("test timed out");
}

/// A session attached over a Unix socket to a fake serial target in `dir`.
async fn pipe_session(dir: &std::path::Path, behaviour: Behaviour) -> (Session, FakeTarget) {
    pipe_session_with(dir, behaviour, options()).await
}

/// [`pipe_session`] with other session options.
async fn pipe_session_with(
    dir: &std::path::Path,
    behaviour: Behaviour,
    options: SessionOptions,
) -> (Session, FakeTarget) {
    let path = dir.join("kd.sock");
    let target = serial_target(&path, behaviour);
    let spec = ConnectSpec::Pipe {
        path,
        reconnect: false,
        resets: None,
    };
    let t = transport::open(&spec, &OpenOptions::default())
        .await
        .unwrap();
    (Session::attach(t, options).await.unwrap(), target)
}

#[tokio::test]
async fn reads_report_unreadable_ranges_and_use_the_cache() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (mut session, target) = pipe_session(dir.path(), Behaviour::default()).await;
        assert_eq!(session.read_chunk(), kdleak::session::MAX_READ);
        let (first, second, requests) = session
            .run_stopped(async |s: &mut Session| {
                let first = s.read_virtual(EDGE_PAGE + 0xf00, 0x200).await?;
                assert_eq!(s.stats().requests, 1, "one request up to the hole");
                let before = s.stats().requests;
                let second = s.read_virtual(EDGE_PAGE + 0xf80, 0x10).await?;
                assert_eq!(s.stats().bytes_needed, 0x200);
                assert_eq!(s.stats().bytes_read, 0x100);
                Ok((first, second, s.stats().requests - before))
            })
            .await
            .unwrap();
        assert_eq!(
            first.unreadable,
            vec![EDGE_PAGE + 0x1000..EDGE_PAGE + 0x1100]
        );
        assert_eq!(first.readable_prefix().len(), 0x100);
        assert_eq!(first.bytes[0], 0x00);
        assert_eq!(first.bytes[0xff], 0xff);
        assert!(first.bytes[0x100..].iter().all(|b| *b == 0));
        assert!(second.is_complete());
        assert_eq!(second.bytes[0], 0x80);
        assert_eq!(requests, 0, "second read must come from the cache");
        assert_running(&target);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_target_that_clips_reads_sets_the_request_size() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let behaviour = Behaviour {
            max_read: 0x300,
            ..Behaviour::default()
        };
        let (mut session, target) = pipe_session(dir.path(), behaviour).await;
        let (page, requests, chunk) = session
            .run_stopped(async |s: &mut Session| {
                let page = s.read_virtual(EDGE_PAGE, 0x1000).await?;
                Ok((page, s.stats().requests, s.read_chunk()))
            })
            .await
            .unwrap();
        assert!(page.is_complete());
        assert!(page.bytes.iter().enumerate().all(|(i, b)| *b == i as u8));
        assert_eq!(
            chunk, 0x300,
            "the first short, successful reply sets the size"
        );
        // 0x1000 bytes in 0x300-byte replies: 6 requests, the last one short of the page end.
        assert_eq!(requests, 6);
        let sizes: Vec<u32> = target
            .observed()
            .requests
            .iter()
            .filter(|(api, _, _)| *api == ApiNumber::READ_VIRTUAL_MEMORY)
            .map(|(_, _, len)| *len)
            .collect();
        assert_eq!(sizes[0] as usize, kdleak::session::MAX_READ);
        assert!(sizes[1..].iter().all(|&n| n <= 0x300), "{sizes:x?}");
        assert_running(&target);
    })
    .await
    .expect("test timed out");
}

/// A table read backwards in blocks (the log, newest first) costs whole requests: each block's
/// lowest request reaches down into the next block, which then starts from the cache. Where
/// nothing is mapped below, that read-behind fails and the block is read from its own start.
#[tokio::test]
async fn a_table_read_backwards_pays_no_short_request_per_block() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let chunked = SessionOptions {
            read_chunk: Some(0x300),
            ..options()
        };
        let (mut session, target) =
            pipe_session_with(dir.path(), Behaviour::default(), chunked).await;
        // Each stop starts with an empty cache; `blocks` are (start, length) from EDGE_PAGE.
        let read_backwards = async |session: &mut Session, blocks: &[(u64, usize)]| {
            session
                .run_stopped(async |s: &mut Session| {
                    let before = s.stats().requests;
                    for &(start, len) in blocks {
                        let block = s.read_virtual(EDGE_PAGE + start, len).await?;
                        assert!(block.is_complete(), "{block:?}");
                        assert!(
                            block
                                .bytes
                                .iter()
                                .enumerate()
                                .all(|(i, b)| *b == (start as usize + i) as u8),
                            "block at {start:#x}"
                        );
                    }
                    Ok(s.stats().requests - before)
                })
                .await
                .unwrap()
        };
        // 0x1000 bytes in 0x300-byte requests: 6 carry them. Block by block it took 8
        // (2 per 0x400 block); reading behind, 2 + 2 + 1 + 1.
        let blocks = [(0xc00, 0x400), (0x800, 0x400), (0x400, 0x400), (0, 0x400)];
        assert_eq!(read_backwards(&mut session, &blocks).await, 6);
        session.break_in().await.unwrap();
        // The second block's read-behind starts below the page, where nothing is mapped:
        // one failed request, then its own 3 (3 + 1 + 3).
        let blocks = [(0x800, 0x800), (0, 0x800)];
        assert_eq!(read_backwards(&mut session, &blocks).await, 7);
        let sizes: Vec<u32> = target
            .observed()
            .requests
            .iter()
            .filter(|(api, _, _)| *api == ApiNumber::READ_VIRTUAL_MEMORY)
            .map(|(_, _, len)| *len)
            .collect();
        assert!(sizes.iter().all(|&len| len <= 0x300), "{sizes:x?}");
        let o = target.observed();
        assert!(!o.stopped && o.stops == 2 && o.continues == 2, "{o:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn errors_and_timeouts_inside_still_resume() {
    timeout(LIMIT, async {
        let (t, target) = kdnet_pair(Behaviour::default()).await;
        let mut session = Session::attach(t, options()).await.unwrap();
        let err = session
            .run_stopped(async |_s: &mut Session| -> kdleak::session::Result<()> {
                Err(Error::Protocol("work failed".into()))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("work failed"));
        assert_running(&target);

        session.break_in().await.unwrap();
        let mut opts = options();
        opts.overall_timeout = Some(Duration::from_millis(300));
        drop(session);
        let (t, target) = kdnet_pair(Behaviour::default()).await;
        let mut session = Session::attach(t, opts).await.unwrap();
        let err = session
            .run_stopped(async |_s: &mut Session| {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::OverallTimeout(_)), "{err}");
        assert_eq!(err.exit_code(), 3);
        assert_running(&target);
    })
    .await
    .expect("test timed out");
}

#[test]
fn a_panic_inside_still_resumes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        timeout(LIMIT, async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kd.sock");
            let target = serial_target(&path, Behaviour::default());
            let path2 = path.clone();
            // The session runs on its own thread and runtime so its panic can be observed.
            let worker = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let spec = ConnectSpec::Pipe {
                        path: path2,
                        reconnect: false,
                        resets: None,
                    };
                    let t = transport::open(&spec, &OpenOptions::default())
                        .await
                        .unwrap();
                    let mut session = Session::attach(t, options()).await.unwrap();
                    let _: kdleak::session::Result<()> = session
                        .run_stopped(async |s: &mut Session| {
                            s.read_virtual(KERN_BASE, 8).await?;
                            panic!("deliberate panic while stopped");
                        })
                        .await;
                })
            });
            let joined = tokio::task::spawn_blocking(move || worker.join())
                .await
                .unwrap();
            assert!(joined.is_err(), "the panic must propagate");
            assert_running(&target);
        })
        .await
        .expect("test timed out");
    });
}

#[tokio::test]
async fn stay_broken_leaves_the_target_stopped() {
    timeout(LIMIT, async {
        let (t, target) = kdnet_pair(Behaviour::default()).await;
        let mut opts = options();
        opts.stay_broken = true;
        let mut session = Session::attach(t, opts).await.unwrap();
        session
            .run_stopped(async |s: &mut Session| s.get_version().await.map(drop))
            .await
            .unwrap();
        let o = target.observed();
        assert!(o.stopped && o.continues == 0, "{o:?}");
        assert!(session.is_stopped());
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn kdnet_reboot_rehandshakes_and_attach_again_works() {
    timeout(LIMIT, async {
        let (t, target) = kdnet_pair(Behaviour::default()).await;
        let mut session = Session::attach(t, options()).await.unwrap();
        session.resume().await.unwrap();
        // Wait out the re-handshake guard, then "reboot".
        tokio::time::sleep(Duration::from_millis(1600)).await;
        target.reboot.as_ref().unwrap().send(()).unwrap();
        session.break_in().await.unwrap();
        let version = session.get_version().await.unwrap();
        assert_eq!(version.build(), BUILD);
        session.resume().await.unwrap();
        let o = target.observed();
        assert_eq!(o.handshakes, 2, "{o:?}");
        assert!(!o.stopped);
        let Transport::Kdnet(k) = session.transport() else {
            unreachable!()
        };
        assert_eq!(k.stats().handshakes, 2);
    })
    .await
    .expect("test timed out");
}
