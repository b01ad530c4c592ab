//! The status page at `/`, rendered by headless Chromium against the admin TCP listener.

mod common;

use common::{browser_dom, Setup};
use switchyard::config::Config;
use switchyard::control::command::{Change, RolloutAction};
use switchyard::control::record::Origin;
use switchyard::rollout;
use switchyard::run::RunningProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_weights_history_guard_rollout_and_incidents_in_a_browser() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 95, canary = 5 }", "");
    let token = setup.dir.path().join("admin.token");
    std::fs::write(&token, "page-test-token-0123456789").unwrap();
    let extra = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"",
        token.display()
    );
    setup.write(&upstreams, "{ blue = 95, canary = 5 }", &extra);
    let mut text = std::fs::read_to_string(&setup.config).unwrap();
    text.push_str("\n[services.shop.rollout]\nsteps = [10, 100]\nbake = \"1m\"\n");
    std::fs::write(&setup.config, text).unwrap();
    common::write_incidents(
        &setup.dir.path().join("state"),
        &[common::incident(
            1,
            "shop",
            "canary error rate 30.00% over 40 requests",
        )],
    );
    let config = Config::load(&setup.config).unwrap();
    let proxy = RunningProxy::start(config, &setup.config, 1).await.unwrap();
    // A rollout, then a change by hand: the rollout pauses itself.
    let origin = Origin::new("page-tester", "ramp");
    proxy
        .rollouts
        .command("shop", RolloutAction::Start, origin)
        .await
        .unwrap();
    let weights = [("blue".to_string(), 70), ("canary".to_string(), 30)].into();
    let origin = Origin::new("page-tester", "page shows this reason");
    proxy
        .controller
        .apply("shop", Change::Weights { weights }, origin)
        .await
        .unwrap();
    proxy
        .controller
        .apply("shop", Change::Freeze {}, Origin::new("page-tester", ""))
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while proxy.rollouts.all().await["shop"].rollout.status != rollout::Status::Paused
        || proxy.board.get("shop").is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout never paused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let url = format!("http://{}/", proxy.admin.tcp.unwrap());
    let dom = browser_dom(url).await;
    for expected in [
        "id=\"service-shop\"",
        "data-version=\"blue\"",
        "data-version=\"canary\"",
        "<td class=\"num weight\">70</td>",
        "<td class=\"num weight\">30</td>",
        "70.0%",
        "1.0-canary c0ffee",
        "frozen",
        "page-tester",
        "page shows this reason",
        "revision 4",
        "rollout of canary: paused at step 1/2 (10%)",
        "routing changed outside the rollout",
        "rollout started by page-tester: ramp",
        "guard: canary <span class=\"verdict-inconclusive\">inconclusive</span>",
        "<tr class=\"incident\">",
        "canary error rate 30.00% over 40 requests",
        "0.84 s",
        "2/28",
        "return point blue: last checked",
        "last incident #1",
        "<th>checks</th>",
    ] {
        assert!(
            dom.contains(expected),
            "the page lacks {expected:?}:\n{dom}"
        );
    }
    proxy.shutdown().await;
}
