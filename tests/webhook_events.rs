//! Webhook events are typed and signed: a receiver that checks the HMAC signatures with
//! Python's own `hmac` takes every event switchyard sends and refuses a forged one; it
//! tells an operator's revision from the guard's incident by the event type, the
//! incident carries the guard's evidence, and a Slack hook gets a line of text. Over https
//! the receiver's certificate is checked against `[hooks] ca`.

mod common;
use common::signed_receiver::PythonReceiver;
use common::*;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "correct-horse-battery-staple\n";

async fn raw_post(addr: std::net::SocketAddr, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /forged HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_typed_events_reach_a_verifying_receiver_and_slack_gets_text() {
    let upstreams = upstreams(&["blue", "canary"]).await;
    let receiver_addr = free_addr();
    let setup = Setup::new(&upstreams, "{ blue = 50, canary = 50 }", "");
    let secret = setup.dir.path().join("hook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let hooks = format!(
        "\n[hooks]\nwebhooks = [\"http://{receiver_addr}/events\"]\nslack = [\"http://{receiver_addr}/slack\"]\nsecret_file = \"{}\"\ntimeout = \"2s\"\n",
        secret.display()
    );
    setup.write(&upstreams, "{ blue = 50, canary = 50 }", &hooks);
    let mut receiver = PythonReceiver::start(receiver_addr.port(), &secret, None)
        .listening(receiver_addr)
        .await;
    let proxy = Proxy::start(&setup, &[]).await;

    // The receiver is real: a forged signature and a stale timestamp are refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!(
        "X-Switchyard-Timestamp: {now}\r\nX-Switchyard-Signature: v1={}\r\n",
        "0".repeat(64)
    );
    let answer = raw_post(receiver_addr, &forged, "{\"event\":\"revision\"}").await;
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");

    // An operator's change: a revision.
    let out = setup.ctl(&["weights", "shop", "blue=60", "canary=40"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let weights = receiver
        .until(|line| line["body"]["kind"] == "weights" && line["path"] == "/events")
        .await;
    assert_eq!(weights["event"], "revision");
    assert_eq!(weights["body"]["event"], "revision");
    assert_eq!(weights["body"]["actor"], "tester");

    // A canary that fails every request: the guard cuts it back, an incident with evidence.
    upstreams[1].faults.set_error_rate(1.0);
    let mut client = Client::connect(proxy.addr).await;
    let traffic = tokio::spawn(async move {
        for _ in 0..400 {
            client.get("/").await;
        }
    });
    let incident = receiver
        .until(|line| line["event"] == "incident" && line["path"] == "/events")
        .await;
    traffic.abort();
    let incident = &incident["body"];
    assert_eq!(incident["event"], "incident");
    assert_eq!(incident["kind"], "abort");
    assert_eq!(incident["actor"], "guard");
    assert!(incident["evidence"].is_object(), "{incident:#}");
    assert_eq!(incident["routing"]["latched"], true);
    let slack = receiver
        .until(|line| line["path"] == "/slack" && line["event"] == "incident")
        .await;
    let text = slack["body"]["text"].as_str().unwrap();
    assert!(text.contains("incident shop: abort by guard"), "{text}");
    let from_switchyard = receiver
        .seen
        .iter()
        .filter(|line| line["path"] != "/forged");
    assert!(
        from_switchyard.clone().count() >= 4
            && from_switchyard
                .into_iter()
                .all(|line| line["verified"] == true),
        "an event failed verification: {:#?}",
        receiver.seen
    );
    drop(proxy);
}

/// A CA and a certificate for 127.0.0.1 it signed, written to `dir`: (ca, cert, key).
fn loopback_certificate(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("hook.pem"),
        dir.join("hook.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_hooks_are_delivered_only_to_a_certificate_the_ca_vouches_for() {
    let upstreams = upstreams(&["blue", "canary"]).await;
    let receiver_addr = free_addr();
    let setup = Setup::new(&upstreams, "{ blue = 100, canary = 0 }", "");
    let secret = setup.dir.path().join("hook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let (ca, cert, key) = loopback_certificate(setup.dir.path());
    let mut receiver = PythonReceiver::start(receiver_addr.port(), &secret, Some((&cert, &key)))
        .listening(receiver_addr)
        .await;
    let hooks = |ca_line: &str| {
        format!(
            "\n[hooks]\nwebhooks = [\"https://{receiver_addr}/events\"]\nsecret_file = \"{}\"\ntimeout = \"2s\"\nattempts = 1\n{ca_line}",
            secret.display()
        )
    };

    // Without `ca` the system's roots are used, which do not know this CA: nothing arrives.
    setup.write(&upstreams, "{ blue = 100, canary = 0 }", &hooks(""));
    let proxy = Proxy::start(&setup, &[]).await;
    let out = setup.ctl(&["weights", "shop", "blue=90", "canary=10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = wait_for_log(&proxy.log, "webhook down").await;
    assert!(
        log.contains("unknown issuer") || log.contains("no system CA"),
        "{log}"
    );
    drop(proxy);
    assert!(
        receiver.lines.try_recv().is_err(),
        "delivered to an unverified certificate"
    );

    // With the CA: the revision missed and the next arrive, signed.
    setup.write(
        &upstreams,
        "{ blue = 90, canary = 10 }",
        &hooks(&format!("ca = \"{}\"\n", ca.display())),
    );
    let _proxy = Proxy::start(&setup, &[]).await;
    let out = setup.ctl(&["weights", "shop", "blue=80", "canary=20"]);
    assert!(out.status.success(), "{}", stderr(&out));
    receiver
        .until(|line| line["body"]["routing"]["weights"]["canary"] == 20)
        .await;
    receiver
        .until(|line| line["body"]["routing"]["weights"]["canary"] == 10)
        .await;
    assert!(
        receiver.seen.iter().all(|line| line["verified"] == true),
        "{:#?}",
        receiver.seen
    );
}

/// The proxy's log once it contains `text` (bounded).
async fn wait_for_log(log: &Path, text: &str) -> String {
    for _ in 0..600 {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{text:?} never appeared in {}", log.display());
}
