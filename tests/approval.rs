//! Rollout steps that wait for a yes: `approve = true` holds the step until `switchyard ctl
//! approve` (who and why recorded as a revision); a webhook gate holds it until a real
//! loopback receiver answers 2xx within the gate's timeout (a 500 or a slow answer holds
//! it, and it is asked again).

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::admin::api::ServiceStatus;
use switchyard::rollout::Status;

const RPS: u64 = 300;
const MAX: Duration = Duration::from_secs(60);

const GUARD: &str = r#"
[services.shop.guard]
latency_min_samples = 20
latency_min_increase = "1s"
"#;

async fn wait_for(
    proxy: &TestProxy,
    what: &str,
    until: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + MAX;
    loop {
        let status = proxy.admin().service("shop").await.unwrap();
        if until(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn held(status: &ServiceStatus) -> String {
    status
        .rollout
        .as_ref()
        .and_then(|r| r.held.clone())
        .unwrap_or_default()
}

fn done(status: &ServiceStatus) -> bool {
    status
        .rollout
        .as_ref()
        .is_some_and(|r| r.rollout.status == Status::Done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_step_holds_until_ctl_approve_which_records_who_and_why() {
    let rollout = format!(
        "{GUARD}\n[services.shop.rollout]\nsteps = [{{ percent = 20, approve = true }}, 100]\nbake = \"1s\"\n"
    );
    let pair = pair("blue", "canary", (100, 0), &rollout).await;
    let proxy = &pair.proxy;
    let traffic = Load::start(proxy.addr(), RPS, MAX);
    let out = ctl(proxy, &["approve", "shop"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no rollout is running"),
        "{}",
        stderr(&out)
    );

    for (path, body, status) in [
        (
            "/services/shop/approve",
            r#"{"actor":"eve","weights":{"blue":1}}"#,
            400,
        ),
        (
            "/services/shop/approve",
            r#"{"actor":"eve","force":true}"#,
            400,
        ),
        ("/services/shop/approve", "not json", 400),
        ("/services/nope/approve", "{}", 404),
    ] {
        let (got, text) = admin_raw_on(&proxy.admin(), http::Method::POST, path, body).await;
        assert_eq!(got, status, "{path} {body}: {text}");
        assert!(text.contains("\"error\""), "{text}");
    }

    let out = ctl(proxy, &["rollout", "shop", "start"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let waiting = wait_for(proxy, "waiting for approval", |s| {
        held(s).contains("waiting for approval")
    })
    .await;
    assert_eq!(waiting.rollout.as_ref().unwrap().percent, 20);
    let text = stdout(&ctl(proxy, &["rollout", "shop", "pause"]).await);
    assert!(text.contains("paused"), "{text}");
    let text = stdout(&ctl(proxy, &["rollout", "shop", "resume"]).await);
    assert!(text.contains("running"), "{text}");
    let again = wait_for(proxy, "waiting again", |s| {
        held(s).contains("waiting for approval")
    })
    .await;
    assert_eq!(again.stable, "blue", "went on without approval");

    let out = ctl(
        proxy,
        &["approve", "shop", "--reason", "dashboards look right"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("approved by tester"),
        "{}",
        stdout(&out)
    );
    let finished = wait_for(proxy, "promoted", done).await;
    let load = traffic.stop().await;
    assert_eq!(finished.stable, "canary");
    assert_eq!(load.failed, 0, "{load:?}");

    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    let needed: Vec<_> = history
        .iter()
        .filter(|r| r.kind.label() == "approval_needed")
        .collect();
    assert_eq!(needed.len(), 1, "asked once for the step: {needed:#?}");
    assert_eq!(needed[0].actor, "rollout");
    assert!(
        needed[0].reason.contains("ctl approve shop"),
        "{:?}",
        needed[0]
    );
    let approved = history
        .iter()
        .find(|r| r.kind.label() == "approved")
        .expect("an approved revision");
    assert_eq!(approved.actor, "tester");
    assert!(
        approved.reason.contains("dashboards look right") && approved.reason.contains("20%"),
        "{approved:?}"
    );
    let rollout = finished.rollout.unwrap().rollout;
    let approval = rollout.approved.unwrap();
    assert_eq!(
        (approval.actor.as_str(), approval.revision),
        ("tester", approved.revision)
    );
    let text = stdout(&ctl(proxy, &["history", "shop"]).await);
    assert!(text.contains("dashboards look right"), "{text}");
}

/// What the receiver answers: 500, nothing for 3s, or 204.
const REFUSE: u8 = 0;
const SLOW: u8 = 1;
const ACCEPT: u8 = 2;

struct Receiver {
    url: String,
    mode: Arc<AtomicU8>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gate", listener.local_addr().unwrap());
    let mode = Arc::new(AtomicU8::new(REFUSE));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (served_mode, served_bodies) = (mode.clone(), bodies.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (mode, bodies) = (served_mode.clone(), served_bodies.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (mode, bodies) = (mode.clone(), bodies.clone());
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        if let Ok(json) = serde_json::from_slice(&body) {
                            bodies.lock().unwrap().push(json);
                        }
                        let status = match mode.load(Ordering::SeqCst) {
                            REFUSE => 500,
                            SLOW => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                204
                            }
                            _ => 204,
                        };
                        let mut answer = http::Response::new(Full::new(Bytes::new()));
                        *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(answer)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Receiver { url, mode, bodies }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gate_holds_the_step_until_it_answers_2xx_in_time() {
    let gate = receiver().await;
    let rollout = format!(
        "{GUARD}\n[services.shop.rollout]\nsteps = [{{ percent = 20, gate = {{ url = \"{}\", timeout = \"1s\" }} }}, 100]\nbake = \"1s\"\n",
        gate.url
    );
    let pair = pair("blue", "canary", (100, 0), &rollout).await;
    let proxy = &pair.proxy;
    let traffic = Load::start(proxy.addr(), RPS, MAX);
    let out = ctl(proxy, &["rollout", "shop", "start"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let refused = wait_for(proxy, "held by a 500", |s| held(s).contains("answered 500")).await;
    assert_eq!(refused.stable, "blue");
    let asked = gate.bodies.lock().unwrap().len();
    gate.mode.store(SLOW, Ordering::SeqCst);
    let slow = wait_for(proxy, "held by a slow gate", |s| {
        held(s).contains("no answer within")
    })
    .await;
    assert_eq!(slow.stable, "blue");
    assert!(gate.bodies.lock().unwrap().len() > asked, "not asked again");

    gate.mode.store(ACCEPT, Ordering::SeqCst);
    let finished = wait_for(proxy, "promoted", done).await;
    let load = traffic.stop().await;
    assert_eq!(finished.stable, "canary");
    assert_eq!(load.failed, 0, "{load:?}");
    let bodies = gate.bodies.lock().unwrap().clone();
    let last = bodies.last().unwrap();
    assert_eq!(
        (
            &last["service"],
            &last["canary"],
            &last["percent"],
            &last["next_percent"]
        ),
        (
            &serde_json::json!("shop"),
            &serde_json::json!("canary"),
            &serde_json::json!(20),
            &serde_json::json!(100)
        )
    );
}
