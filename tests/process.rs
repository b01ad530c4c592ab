//! The real binary as an operator runs it: check, SIGHUP reload, SIGTERM drain, memory.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn switchyard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_shipped_examples() {
    for example in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = example.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = switchyard(&["check", "--config", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn check_lists_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("[proxy]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n", &[":3: unknown field `bogus`"]),
        ("[proxy\nlisten = 1\n", &[":1: "]),
        ("", &[":1: missing field `proxy`"]),
        (
            "[proxy]\nlisten = \"here\"\n[services.a]\nstable = \"x\"\nweights = { x = 0, y = -1 }\n[services.a.versions.x]\nendpoints = [\"127.0.0.1:1\", \"nope\"]\n",
            &[
                ":2: proxy.listen \"here\" is not an IP:port",
                ":5: services.a.weights names version \"y\", which is not defined",
                ":5: services.a.weights.y is negative",
                ":5: services.a.weights are all zero",
                ":7: services.a.versions.x endpoint \"nope\"",
            ],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\nresolve_every = \"10ms\"\n",
            &[":3: proxy.resolve_every must be \"0s\" (off) or at least 1s"],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[proxy.timeouts]\nconnect = \"5 parsecs\"\n",
            &[":4: duration \"5 parsecs\""],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.a]\nhosts = [\"x.com\"]\nstable = \"v\"\nweights = { v = 1 }\n[services.a.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n[services.b]\nhosts = [\"X.com\"]\nstable = \"v\"\nweights = { v = 1 }\n[services.b.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n",
            &[":10: host \"x.com\" is claimed by both services.a and services.b"],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.a]\nstable = \"v\"\nweights = { v = 1 }\nsticky = { cookie = \"c\", header = \"h\" }\n[services.a.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n[[services.a.match]]\nheader = \"x\"\nvalue = \"1\"\nversion = \"w\"\n",
            &[":6: services.a.sticky needs exactly one", ":9: services.a.match names version \"w\""],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.a]\nstable = \"v\"\nweights = { v = 1 }\n[services.a.rollout]\nsteps = [5, 1, 0, 50]\nbake = \"0s\"\n[services.a.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n[services.a.versions.w]\nendpoints = [\"127.0.0.1:1\"]\n",
            &[
                ":7: services.a.rollout.steps must be strictly increasing: 1 comes after 5",
                ":7: services.a.rollout.steps: 0 is not a percent from 1 to 100",
                ":7: services.a.rollout.steps must end with 100 (the promotion), not 50",
                ":8: services.a.rollout.bake must be more than 0",
            ],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.a]\nstable = \"v\"\nweights = { v = 1 }\n[services.a.rollout]\nsteps = [100]\nbake = \"1s\"\n[services.a.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n[services.a.versions.w]\nendpoints = [\"127.0.0.1:1\"]\n[services.a.versions.x]\nendpoints = [\"127.0.0.1:1\"]\n[services.b]\nhosts = [\"b\"]\nstable = \"v\"\nweights = { v = 1 }\n[services.b.guard]\nenabled = false\n[services.b.rollout]\nsteps = [10, 100]\nbake = \"1s\"\ncanary = \"v\"\n[services.b.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n[services.c]\nhosts = [\"c\"]\nstable = \"v\"\nweights = { v = 1 }\n[services.c.rollout]\nsteps = []\nbake = \"1s\"\ncanary = \"nope\"\n[services.c.versions.v]\nendpoints = [\"127.0.0.1:1\"]\n",
            &[
                ":6: services.a.rollout: cannot tell which version rolls out (w, x); set canary",
                ":7: services.a.rollout.steps needs a step below 100",
                ":21: services.b.rollout needs the guard",
                ":24: services.b.rollout.canary is \"v\", the stable version",
                ":32: services.c.rollout.steps is empty",
                ":34: services.c.rollout.canary names version \"nope\", which is not defined",
            ],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.a]\nstable = \"v\"\nweights = { v = 1 }\n[services.a.rollout]\nsteps = [10, 100]\nbake = \"soon\"\n",
            &[":8: duration \"soon\" does not start with a whole number"],
        ),
        (
            "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.a]\nstable = \"v\"\nweights = { v = 1 }\n[services.a.rollout]\nsteps = [10, 100]\nbake = \"1s\"\npace = \"fast\"\n",
            &[":9: unknown field `pace`"],
        ),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{index}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = switchyard(&["check", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "case {index} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            assert!(
                line.starts_with(path.to_str().unwrap()),
                "case {index}: not FILE:LINE: {line}"
            );
        }
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "case {index}: missing {needle:?} in:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = switchyard(&["check", "--config", "/nonexistent/switchyard.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

/// `check` reads a config without the network (a CI job checks production names it cannot
/// resolve); applying it, at start, looks the names up and names the one that gave nothing.
#[test]
fn check_never_looks_names_up_and_run_names_the_one_that_does_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {state:?}\n[admin]\nsocket = {:?}\n[services.a]\nstable = \"x\"\nweights = {{ x = 1 }}\n[services.a.versions.x]\nendpoints = [\"127.0.0.1:1\", \"no-such-host.invalid:80\"]\n",
            dir.path().join("admin.sock")
        ),
    )
    .unwrap();
    let out = switchyard(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = switchyard(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "services.a.versions.x endpoint \"no-such-host.invalid:80\" does not resolve"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_a_good_config_and_keeps_routing_on_a_bad_one() {
    let versions = upstreams(&["blue", "green"]).await;
    let setup = Setup::new(&versions, "{ blue = 100, green = 0 }", "");
    let proxy = Proxy::start(&setup, &[]).await;
    let client = client();
    assert_eq!(
        get(&client, proxy.addr, "/", &[]).await.version.as_deref(),
        Some("blue")
    );

    setup.write(&versions, "{ blue = 0, green = 100 }", "");
    proxy.signal(libc::SIGHUP);
    let mut switched = false;
    for _ in 0..100 {
        if get(&client, proxy.addr, "/", &[]).await.version.as_deref() == Some("green") {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "reload did not take effect: {}", proxy.log_text());

    std::fs::write(
        &setup.config,
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[services.shop]\nstable = 3\n",
    )
    .unwrap();
    proxy.signal(libc::SIGHUP);
    let mut logged = false;
    for _ in 0..100 {
        if proxy.log_text().contains("reload rejected") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged, "{}", proxy.log_text());
    assert!(
        proxy.log_text().contains("switchyard.toml:"),
        "{}",
        proxy.log_text()
    );
    for _ in 0..20 {
        assert_eq!(
            get(&client, proxy.addr, "/", &[]).await.version.as_deref(),
            Some("green")
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let versions = upstreams(&["blue"]).await;
    versions[0]
        .faults
        .set_latency(Duration::from_millis(700), Duration::ZERO);
    let setup = Setup::new(&versions, "{ blue = 1 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;
    let addr = proxy.addr;
    let client = client();
    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr, "/", &[]).await })
        })
        .collect();
    // Each request takes 700 ms upstream: after 200 ms all eight are well on their way.
    let reach_the_upstream = Duration::from_millis(200);
    tokio::time::sleep(reach_the_upstream).await;
    proxy.signal(libc::SIGTERM);
    for request in in_flight {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "an in-flight request was cut: {reply:?}");
    }
    let (status, log) = tokio::task::spawn_blocking(move || {
        let status = proxy.child.wait().unwrap();
        (status, proxy.log_text())
    })
    .await
    .unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after drain"
    );
}

#[tokio::test]
async fn streaming_a_gibibyte_keeps_memory_flat() {
    let versions = upstreams(&["blue"]).await;
    let setup = Setup::new(&versions, "{ blue = 1 }", "");
    let proxy = Proxy::start(&setup, &[]).await;
    let addr = proxy.addr;
    let client = client();
    assert_eq!(get(&client, addr, "/", &[]).await.status, 200);
    let before = proxy.rss_kib();
    const GIB: u64 = 1 << 30;
    let response = client
        .get(format!("http://{addr}/bytes/{GIB}").parse().unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut peak = before;
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
        if received % (64 << 20) < 65536 {
            peak = peak.max(proxy.rss_kib());
        }
    }
    peak = peak.max(proxy.rss_kib());
    assert_eq!(received, GIB);
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    eprintln!("proxy RSS before {before} KiB, peak {peak} KiB, growth {growth_mib} MiB");
    assert!(
        growth_mib < 32,
        "streaming 1 GiB grew the proxy by {growth_mib} MiB"
    );
}
