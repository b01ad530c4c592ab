//! Routing over real sockets: weighted split, sticky users, forced match, hosts, reload.

mod common;
use common::*;
use std::collections::HashMap;
use switchyard::control::record::Origin;

#[tokio::test]
async fn weighted_split_follows_weights() {
    let Pair {
        proxy,
        stable: _blue,
        canary: _canary,
    } = pair("blue", "canary", (90, 10), "").await;
    let client = client();
    let mut seen: HashMap<String, u32> = HashMap::new();
    const N: u32 = 2000;
    for _ in 0..N {
        let reply = get(&client, proxy.addr(), "/", &[]).await;
        assert_eq!(reply.status, 200);
        // The header and the upstream's own answer agree.
        let version = reply.version.unwrap();
        assert_eq!(reply.body, format!("version={version}\n"));
        *seen.entry(version).or_default() += 1;
    }
    let canary_share = f64::from(seen["canary"]) / f64::from(N);
    // 10% of 2000: the standard deviation is 0.67 points; 4 sigma is ±2.7 points.
    assert!(
        (canary_share - 0.10).abs() < 0.027,
        "canary share {canary_share}"
    );
}

/// The version that answers user `user` (sticky by the `x-user-id` header).
async fn version_for_user(client: &HttpClient, addr: std::net::SocketAddr, user: u32) -> String {
    let id = user.to_string();
    let reply = get(client, addr, "/", &[("x-user-id", &id)]).await;
    reply.version.unwrap()
}

#[tokio::test]
async fn sticky_users_stay_put_and_raising_the_canary_keeps_them() {
    let sticky = "sticky = { header = \"x-user-id\" }";
    let Pair {
        proxy,
        stable: blue,
        canary,
    } = pair("blue", "canary", (95, 5), sticky).await;
    let client = client();
    let mut first: HashMap<u32, String> = HashMap::new();
    for user in 0..400u32 {
        first.insert(user, version_for_user(&client, proxy.addr(), user).await);
    }
    // Same weights: nobody moves.
    for user in 0..400u32 {
        let now = version_for_user(&client, proxy.addr(), user).await;
        assert_eq!(Some(&now), first.get(&user), "user {user} moved");
    }
    let on_canary = first.values().filter(|v| *v == "canary").count();
    assert!(
        on_canary > 0 && on_canary < 60,
        "{on_canary} of 400 users on a 5% canary"
    );

    // Raise the canary to 30%: every canary user stays; some blue users join it.
    proxy.rewrite(&two_versions(&blue, &canary, (70, 30), sticky));
    proxy
        .proxy
        .controller
        .reload(Origin::new("test", "config edited"))
        .await
        .unwrap();
    let mut joined = 0;
    for user in 0..400u32 {
        let now = version_for_user(&client, proxy.addr(), user).await;
        if first[&user] == "canary" {
            assert_eq!(now, "canary", "canary user {user} was moved off the canary");
        } else if now == "canary" {
            joined += 1;
        }
    }
    assert!(
        joined > 40,
        "only {joined} users joined a canary raised to 30%"
    );
}

#[tokio::test]
async fn sticky_cookie_is_handed_out_and_followed() {
    let sticky = "sticky = { cookie = \"sy_user\" }";
    let Pair {
        proxy,
        stable: _blue,
        canary: _canary,
    } = pair("blue", "canary", (50, 50), sticky).await;
    let client = client();
    for _ in 0..50 {
        let first = get(&client, proxy.addr(), "/", &[]).await;
        let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(set_cookie.starts_with("sy_user="), "{set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        for _ in 0..5 {
            let again = get(&client, proxy.addr(), "/", &[("cookie", &cookie)]).await;
            assert_eq!(
                again.version, first.version,
                "cookie {cookie} changed version"
            );
            assert!(
                !again.headers.contains_key("set-cookie"),
                "a known client got a new cookie"
            );
        }
    }
}

#[tokio::test]
async fn an_endpoint_may_be_a_host_name() {
    let blue = upstream("blue").await;
    let canary = upstream("canary").await;
    let by_name = format!("\"localhost:{}\"", blue.addr.port());
    let config =
        two_versions(&blue, &canary, (100, 0), "").replace(&format!("\"{}\"", blue.addr), &by_name);
    assert!(config.contains(&by_name));
    let proxy = TestProxy::start(&config).await;
    let client = client();
    for _ in 0..20 {
        let reply = get(&client, proxy.addr(), "/", &[]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.version.as_deref(), Some("blue"));
    }
}

/// Where the stand-in resolver says every name now is; `None`: lookups fail.
static NAMES_POINT_TO: std::sync::Mutex<Option<std::net::SocketAddr>> = std::sync::Mutex::new(None);

fn stand_in_resolver(_entry: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    match *NAMES_POINT_TO.lock().unwrap() {
        Some(addr) => Ok(vec![addr]),
        None => Err("does not resolve (stand-in)".into()),
    }
}

#[tokio::test]
async fn endpoint_names_follow_their_addresses_and_a_failed_lookup_keeps_the_last() {
    let before = upstream("before").await;
    let after = upstream("after").await;
    let body = format!(
        "[services.shop]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n[services.shop.versions.blue]\nendpoints = [\"localhost:{}\"]\n",
        before.addr.port(),
    );
    let proxy = TestProxy::start(&body).await;
    let controller = &proxy.proxy.controller;
    let client = client();
    let served_by = || async {
        let reply = get(&client, proxy.addr(), "/", &[]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    };
    assert_eq!(served_by().await, "version=before\n");
    let revision = controller.snapshot().await.revision;

    // The name moves, and traffic follows it.
    *NAMES_POINT_TO.lock().unwrap() = Some(after.addr);
    let changed = controller.refresh_endpoints(stand_in_resolver).await;
    assert_eq!(changed, ["shop/blue"]);
    let table = controller.plane.table.load();
    let endpoints: Vec<_> = table.services()[0].versions[0]
        .endpoints
        .iter()
        .map(|e| e.addr)
        .collect();
    assert_eq!(endpoints, [after.addr]);
    for _ in 0..20 {
        assert_eq!(served_by().await, "version=after\n");
    }

    // The same answer again changes nothing; a failed lookup keeps the last addresses.
    assert!(controller
        .refresh_endpoints(stand_in_resolver)
        .await
        .is_empty());
    *NAMES_POINT_TO.lock().unwrap() = None;
    assert!(controller
        .refresh_endpoints(stand_in_resolver)
        .await
        .is_empty());
    assert_eq!(served_by().await, "version=after\n");
    assert_eq!(
        controller.snapshot().await.revision,
        revision,
        "an address change is topology, not a routing revision"
    );
}

#[tokio::test]
async fn forced_match_wins_over_weights() {
    let blue = upstream("blue").await;
    let canary = upstream("canary").await;
    let rule =
        "\n[[services.shop.match]]\nheader = \"x-canary\"\nvalue = \"1\"\nversion = \"canary\"\n";
    let proxy = TestProxy::start(&(two_versions(&blue, &canary, (100, 0), "") + rule)).await;
    let client = client();
    for _ in 0..50 {
        let forced = get(&client, proxy.addr(), "/", &[("x-canary", "1")]).await;
        assert_eq!(forced.version.as_deref(), Some("canary"));
        let normal = get(&client, proxy.addr(), "/", &[("x-canary", "0")]).await;
        assert_eq!(normal.version.as_deref(), Some("blue"));
    }
}

#[tokio::test]
async fn services_are_chosen_by_host() {
    let shop = upstream("shopv1").await;
    let api = upstream("apiv1").await;
    let config = format!(
        r#"
[services.shop]
hosts = ["shop.example.com"]
stable = "shopv1"
weights = {{ shopv1 = 1 }}
[services.shop.versions.shopv1]
endpoints = ["{}"]

[services.api]
hosts = ["API.example.com"]
stable = "apiv1"
weights = {{ apiv1 = 1 }}
[services.api.versions.apiv1]
endpoints = ["{}"]
"#,
        shop.addr, api.addr
    );
    let proxy = TestProxy::start(&config).await;
    let client = client();
    let shop_reply = get(
        &client,
        proxy.addr(),
        "/",
        &[("host", "shop.example.com:8080")],
    )
    .await;
    assert_eq!(shop_reply.version.as_deref(), Some("shopv1"));
    let api_reply = get(&client, proxy.addr(), "/", &[("host", "Api.Example.COM")]).await;
    assert_eq!(api_reply.version.as_deref(), Some("apiv1"));
    let unknown = get(&client, proxy.addr(), "/", &[("host", "other.example.com")]).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn reload_swaps_a_good_config_and_rejects_a_bad_one() {
    let Pair {
        proxy,
        stable: blue,
        canary: green,
    } = pair("blue", "green", (100, 0), "").await;
    let client = client();
    assert_eq!(
        get(&client, proxy.addr(), "/", &[])
            .await
            .version
            .as_deref(),
        Some("blue")
    );

    proxy.rewrite(&two_versions(&blue, &green, (0, 100), ""));
    proxy
        .proxy
        .controller
        .reload(Origin::new("test", "config edited"))
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(
            get(&client, proxy.addr(), "/", &[])
                .await
                .version
                .as_deref(),
            Some("green")
        );
    }

    let revision = proxy.proxy.controller.plane.table.load().revision;
    proxy.rewrite("[services.shop]\nstable = \"nope\"\nweights = { nope = 0 }\n");
    let err = proxy
        .proxy
        .controller
        .reload(Origin::new("test", "bad edit"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("switchyard.toml:3: missing field `versions`"),
        "{err}"
    );
    assert_eq!(proxy.proxy.controller.plane.table.load().revision, revision);
    for _ in 0..20 {
        assert_eq!(
            get(&client, proxy.addr(), "/", &[])
                .await
                .version
                .as_deref(),
            Some("green")
        );
    }
}
