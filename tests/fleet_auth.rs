//! NATS authentication of every kind, against real `nats-server` processes configured for
//! it: with the right credentials an instance joins the fleet's log; with wrong ones it
//! refuses to start with one clear line (not an error logged every second).

mod common;

use common::nats::NatsNode;
use common::{upstreams, Proxy, Setup};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_testkit::SampleUpstream;

/// The `[cluster]` section of instance edge-1 of fleet `edge` on `url`, with `more` keys.
fn cluster(url: &str, more: &str) -> String {
    format!("\n[cluster]\nnats = [\"{url}\"]\nname = \"edge\"\ninstance = \"edge-1\"\n{more}\n")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Starts an instance with `cluster`: Ok once it has reached the fleet's log, or the
/// process's log when it would not start.
async fn join(versions: &[SampleUpstream], cluster: &str) -> Result<(), String> {
    let setup = Setup::new(versions, "{ blue = 100 }", cluster);
    let started = Instant::now();
    let mut proxy = Proxy::try_start(&setup, &[]).await?;
    loop {
        let fleet = setup.client().fleet().await.unwrap();
        if fleet.connected && fleet.log_revision.is_some() && fleet.applied >= 1 {
            proxy.terminate();
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("did not join: {fleet:?}\n{}", proxy.log_text()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The start was refused with one line naming NATS's refusal, said once.
fn assert_refused_once(result: Result<(), String>) {
    let log = result.expect_err("started with wrong credentials");
    assert_eq!(
        log.matches("NATS refused this instance").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("NATS refused"))
        .unwrap_or_default();
    println!("refused: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_with_only_the_subjects_the_fleet_needs() {
    let versions = upstreams(&["blue"]).await;
    let permissions = include_str!("../docs/nats-fleet.conf");
    let nats = NatsNode::single_with(permissions);
    let dir = tempfile::tempdir().unwrap();
    let right = write(dir.path(), "right.pass", "edge-1-secret\n");
    let wrong = write(dir.path(), "wrong.pass", "guess\n");
    let auth = |file: &str| format!("auth = {{ user = \"edge-1\", password_file = \"{file}\" }}");
    join(&versions, &cluster(&nats.url(), &auth(&right)))
        .await
        .unwrap_or_else(|log| panic!("{log}\n---- nats\n{}", nats.log_text()));
    assert!(
        !nats.log_text().contains("Violation"),
        "the documented permissions are not enough:\n{}",
        nats.log_text()
    );
    assert_refused_once(join(&versions, &cluster(&nats.url(), &auth(&wrong))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let versions = upstreams(&["blue"]).await;
    let nats = NatsNode::single_with("authorization { token: \"t0ken-for-edge\" }\n");
    let dir = tempfile::tempdir().unwrap();
    let right = write(dir.path(), "right.token", "t0ken-for-edge\n");
    let wrong = write(dir.path(), "wrong.token", "t0ken-guessed\n");
    let auth = |file: &str| format!("auth = {{ token_file = \"{file}\" }}");
    join(&versions, &cluster(&nats.url(), &auth(&right)))
        .await
        .unwrap();
    assert_refused_once(join(&versions, &cluster(&nats.url(), &auth(&wrong))).await);
    // Without any: refused the same way.
    assert_refused_once(join(&versions, &cluster(&nats.url(), "")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed() {
    let versions = upstreams(&["blue"]).await;
    let member = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let nats = NatsNode::single_with(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        member.public_key()
    ));
    let dir = tempfile::tempdir().unwrap();
    let right = write(dir.path(), "right.nk", &member.seed().unwrap());
    let wrong = write(dir.path(), "wrong.nk", &stranger.seed().unwrap());
    let auth = |file: &str| format!("auth = {{ nkey_seed_file = \"{file}\" }}");
    join(&versions, &cluster(&nats.url(), &auth(&right)))
        .await
        .unwrap();
    assert_refused_once(join(&versions, &cluster(&nats.url(), &auth(&wrong))).await);
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes `NAME.pem` and `NAME.key` for 127.0.0.1, signed by this CA.
    fn issue(&self, dir: &Path, name: &str, client: bool) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![match client {
            true => ExtendedKeyUsagePurpose::ClientAuth,
            false => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (
            write(dir, &format!("{name}.pem"), &cert.pem()),
            write(dir, &format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_server_verification_and_client_certificates() {
    let versions = upstreams(&["blue"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = write(dir.path(), "ca.pem", &ca.cert.pem());
    let (server_cert, server_key) = ca.issue(dir.path(), "server", false);
    let (client_cert, client_key) = ca.issue(dir.path(), "client", true);
    let nats = NatsNode::single_with(&format!(
        "tls {{ cert_file: \"{server_cert}\", key_file: \"{server_key}\", ca_file: \"{ca_file}\", verify: true, timeout: 2 }}\n"
    ));
    let url = format!("tls://127.0.0.1:{}", nats.port);
    join(
        &versions,
        &cluster(
            &url,
            &format!(
                "tls = {{ ca = \"{ca_file}\", cert = \"{client_cert}\", key = \"{client_key}\" }}"
            ),
        ),
    )
    .await
    .unwrap_or_else(|log| panic!("{log}\n---- nats\n{}", nats.log_text()));
    // A server this instance's CA did not sign is not trusted.
    let other_ca = write(dir.path(), "other-ca.pem", &Ca::new().cert.pem());
    assert_refused_once(
        join(
            &versions,
            &cluster(
                &url,
                &format!("tls = {{ ca = \"{other_ca}\", cert = \"{client_cert}\", key = \"{client_key}\" }}"),
            ),
        )
        .await,
    );
    // A client certificate the server's CA did not sign is not accepted.
    let stranger = Ca::new();
    let (their_cert, their_key) = stranger.issue(dir.path(), "stranger", true);
    assert_refused_once(
        join(
            &versions,
            &cluster(
                &url,
                &format!("tls = {{ ca = \"{ca_file}\", cert = \"{their_cert}\", key = \"{their_key}\" }}"),
            ),
        )
        .await,
    );
}
