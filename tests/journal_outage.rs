//! Safety never waits: with a journal that cannot be written (a file-size limit makes every
//! append fail with EFBIG, as a full disk fails with ENOSPC), a bad canary is still cut back
//! at once and users see no errors; the abort is journaled, with its original time and
//! evidence, once writes work again, and a restart in between comes back with it in force.
//! Changes that add risk are refused meanwhile.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::admin::api::{ChangeRequest, StatusResponse};
use switchyard::control::journal::verify_file;
use switchyard::control::record::RevisionRecord;

/// The hard file-size limit this process may set its children up to.
fn hard_fsize() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) },
        0
    );
    limit.rlim_max
}

/// Sets the soft file-size limit of process `pid` (`None`: as high as allowed).
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let hard = hard_fsize();
    let limit = libc::rlimit {
        rlim_cur: bytes.map_or(hard, |b| b.min(hard)),
        rlim_max: hard,
    };
    // SAFETY: prlimit on our own child, with a valid struct and no old-value pointer.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// `switchyard run` with its file-size limit set before it starts.
async fn start_limited(setup: &Setup, bytes: u64) -> Proxy {
    let log = setup.dir.path().join("run-limited.log");
    let hard = hard_fsize();
    let mut command = Command::new(BIN);
    command
        .args(["run", "--config"])
        .arg(&setup.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes.min(hard),
                rlim_max: hard,
            };
            match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut proxy = Proxy {
        child: command.spawn().unwrap(),
        addr: "127.0.0.1:0".parse().unwrap(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            proxy.child.try_wait().unwrap().is_none(),
            "exited:\n{}",
            proxy.log_text()
        );
        if let Ok(status) = setup.client().status().await {
            proxy.addr = status.listen.parse().unwrap();
            return proxy;
        }
        assert!(
            Instant::now() < deadline,
            "no answer:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn weights(blue: u64, canary: u64) -> ChangeRequest {
    ChangeRequest {
        weights: Some([("blue".into(), blue), ("canary".into(), canary)].into()),
        ..ChangeRequest::default()
    }
}

fn last_journaled(setup: &Setup) -> RevisionRecord {
    let text = std::fs::read_to_string(setup.journal()).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

async fn status(setup: &Setup) -> StatusResponse {
    setup.client().status().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_swaps_at_once_on_an_unwritable_journal_and_is_journaled_later() {
    let upstreams = upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 90, canary = 10 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;
    let client = setup.client();
    // A journal longer than the reserved file for pending aborts (64 KiB), so a limit at
    // the journal's length fails every append but not the reserved file's writes.
    let mut canary = 10;
    while std::fs::metadata(setup.journal()).unwrap().len() < 70_000 {
        canary = 21 - canary;
        client
            .change("shop", "weights", &weights(100 - canary, canary))
            .await
            .unwrap();
    }
    let journal_len = std::fs::metadata(setup.journal()).unwrap().len();
    limit_file_size(proxy.child.id(), Some(journal_len));

    // A change that adds risk is refused, cleanly; the condition shows everywhere.
    let refused = client
        .change("shop", "weights", &weights(50, 50))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not recorded"), "{refused}");
    assert!(status(&setup).await.journal.is_some());
    let text = stdout(&setup.ctl(&["status"]));
    assert!(text.contains("JOURNAL UNWRITABLE"), "{text}");
    let (_, metrics) = admin_raw(&setup, http::Method::GET, "/metrics", "").await;
    assert!(
        metrics.contains("switchyard_journal_writable 0"),
        "{metrics}"
    );

    // The canary turns bad: cut back at once, users see no errors.
    let load = Load::start(proxy.addr, 300, Duration::from_secs(30));
    let baseline = Duration::from_secs(1);
    tokio::time::sleep(baseline).await;
    upstreams[1].faults.set_error_rate(0.2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !status(&setup).await.services[0].latched {
        assert!(Instant::now() < deadline, "never cut back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let aborted_at = std::time::SystemTime::now();
    let result = load.stop().await;
    assert_eq!(result.failed, 0, "users saw errors: {result:?}");
    assert_eq!(status(&setup).await.journal.unwrap().pending, 1);
    assert_ne!(
        last_journaled(&setup).kind.label(),
        "abort",
        "not yet journaled"
    );
    let refused = client
        .change("shop", "resume", &ChangeRequest::default())
        .await;
    assert!(refused.is_err(), "resume adds risk: refused meanwhile");

    // A restart while the journal is still unwritable comes back with the abort in force.
    proxy.kill();
    let restarted = start_limited(&setup, journal_len).await;
    let after_restart = status(&setup).await;
    assert!(after_restart.services[0].latched, "the abort was forgotten");
    assert_eq!(after_restart.journal.map(|j| j.pending), Some(1));
    let mut http = Client::connect(restarted.addr).await;
    assert_eq!(
        http.tally(20).await,
        [("blue".to_string(), 20)].into(),
        "all traffic on stable"
    );

    // Writes work again: the abort is journaled with its own time and evidence.
    limit_file_size(restarted.child.id(), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_journaled(&setup).kind.label() != "abort" {
        assert!(Instant::now() < deadline, "the abort was never journaled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    verify_file(&setup.journal()).unwrap();
    let abort = last_journaled(&setup);
    assert_eq!(abort.actor, "guard");
    assert!(abort.evidence.is_some());
    let aborted_ms = aborted_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(abort.time_ms <= aborted_ms, "kept its original time");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&setup).await.journal.is_some() {
        assert!(Instant::now() < deadline, "the outage never cleared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .change("shop", "resume", &ChangeRequest::default())
        .await
        .unwrap();
    assert_eq!(last_journaled(&setup).revision, abort.revision + 1);
}
