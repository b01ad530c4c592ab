//! Webhooks get every revision at least once, in order, from the journal: a receiver
//! that was down gets what it missed, and so does one whose proxy restarted meanwhile.

mod common;
use common::hooks::{assert_in_order, until_revision, Receiver};
use common::*;
use std::time::Duration;

fn weights(setup: &Setup, blue: u32, green: u32) -> u64 {
    let out = setup.ctl(&[
        "--json",
        "weights",
        "shop",
        &format!("blue={blue}"),
        &format!("green={green}"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    answer["revision"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_every_revision_it_missed_across_a_restart() {
    let upstreams = upstreams(&["blue", "green"]).await;
    let hook = free_addr();
    let hooks = format!("\n[hooks]\nwebhooks = [\"http://{hook}/hook\"]\ntimeout = \"500ms\"\n");
    let setup = Setup::new(&upstreams, "{ blue = 100, green = 0 }", &hooks);
    let (mut receiver, mut received) = Receiver::new(hook);

    // The receiver is down while the proxy starts and two changes are made.
    let mut proxy = Proxy::start(&setup, &[]).await;
    weights(&setup, 90, 10);
    let last = weights(&setup, 80, 20);
    // Longer than the old three tries: a receiver that comes back late still gets them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    receiver.start().await;
    let events = until_revision(&mut received, last).await;
    assert_in_order(&events, 0);

    // Down again; one more change; the proxy is killed before the receiver is back.
    receiver.stop();
    let missed = weights(&setup, 70, 30);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.kill();
    let _proxy = Proxy::start(&setup, &[]).await;
    receiver.start().await;
    let events = until_revision(&mut received, missed).await;
    assert_in_order(&events, last);
}
