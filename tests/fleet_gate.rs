//! In a fleet the gate holds like anywhere else: a change whose checks ran against one
//! routing is not applied onto another that a second member put in force meanwhile (real
//! `nats-server`, three real switchyard processes).

mod common;

use common::fleet::{serves_only, Fleet};
use common::nats::NatsNode;
use common::upstreams;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SOON: Duration = Duration::from_secs(20);
const CHECKS: &str = "\n[[services.shop.checks]]\nname = \"home\"\npath = \"/\"\nexpect_body = \"version=\"\nmax_latency = \"10s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_change_is_not_applied_onto_a_routing_another_member_moved_meanwhile() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary", "green"]).await;
    let fleet = Fleet::start_with(
        &[&nats],
        &versions,
        "{ blue = 100, canary = 0, green = 0 }",
        |_| CHECKS.to_string(),
    )
    .await;
    versions[0].faults.break_path("/");
    // The canary's checks are answered by hand, so the test knows when they run.
    let canary = versions[1].addr;
    versions[1].stop();
    let listener = TcpListener::bind(canary).await.unwrap();

    let edge1 = &fleet.setups[0];
    let socket = edge1.socket.clone();
    let weights = tokio::task::spawn_blocking(move || {
        common::ctl_at(&socket, &["weights", "shop", "blue=90", "canary=10"])
    });
    let (check, _) = tokio::time::timeout(SOON, listener.accept())
        .await
        .expect("edge-1 never ran the canary's checks")
        .unwrap();

    // While edge-1's gate waits on the canary, edge-2 switches the fleet to green.
    // Every member applied it before anyone is asked (blue's "/" answers 500 meanwhile).
    let switched = fleet.setups[1].ctl(&["switch", "shop", "green", "--wait-fleet=30s"]);
    assert!(switched.status.success(), "{}", common::stderr(&switched));
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "green", SOON).await,
            "{}",
            fleet.logs()
        );
    }
    tokio::spawn(answer_every_check(check, listener));

    let weights = weights.await.unwrap();
    let stderr = common::stderr(&weights);
    assert!(
        !weights.status.success(),
        "weights went onto green's routing, giving blue traffic unchecked\n{}",
        fleet.logs()
    );
    assert!(stderr.contains("blue fails its checks"), "{stderr}");
    for proxy in &fleet.proxies {
        assert!(serves_only(proxy.addr, "green", Duration::ZERO).await);
    }
}

/// Answers `first` and every later connection as a healthy canary would.
async fn answer_every_check(first: tokio::net::TcpStream, listener: TcpListener) {
    let mut next = Some(first);
    loop {
        let mut stream = match next.take() {
            Some(stream) => stream,
            None => match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => return,
            },
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let body = "version=canary\n";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}
