//! TLS to upstreams over real loopback sockets: a TLS upstream (tokio-rustls and hyper in
//! this process) with certificates made by rcgen; the proxy in this process or as the real
//! binary. Good certificates work and their connections are reused; a wrong CA, an expired
//! certificate and a wrong name are each refused with one clear line; mutual TLS; health
//! and smoke checks over TLS; `check` and reloads on bad TLS settings.

mod common;
use common::*;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::HandshakeKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A CA that signs certificates for the tests.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `names`; `client` for a client certificate; `expired` ran out in 2021.
    fn issue(&self, names: &[&str], client: bool, expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![match client {
            true => ExtendedKeyUsagePurpose::ClientAuth,
            false => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl Issued {
    /// Writes NAME.pem and NAME.key; returns both paths.
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// Per handshake: the SNI sent, and whether the session was resumed.
type Handshake = (Option<String>, bool);

/// A TLS upstream: answers every request with "tls <sni>" (and whether the client showed
/// a certificate), counting the handshakes it completed.
struct TlsUpstream {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    names: Arc<Mutex<Vec<Handshake>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    /// Serves `issued` over HTTP/1.1; requires a client certificate signed by
    /// `client_ca` when given.
    async fn start(issued: &Issued, client_ca: Option<&Ca>) -> TlsUpstream {
        TlsUpstream::start_with(issued, client_ca, &[b"http/1.1"]).await
    }

    /// Serves `issued`, offering `alpn`: HTTP/2 on connections that chose "h2", else
    /// HTTP/1.1 (the answer then names the protocol: "tls h2 <sni> ...").
    async fn start_with(issued: &Issued, client_ca: Option<&Ca>, alpn: &[&[u8]]) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.cert.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(LOOPBACK_ANY).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));
        let (counted, named) = (handshakes.clone(), names.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted, named) = (acceptor.clone(), counted.clone(), named.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let session = tls.get_ref().1;
                    let sni = session.server_name().map(str::to_string);
                    let client_cert = session.peer_certificates().is_some();
                    let resumed = session.handshake_kind() == Some(HandshakeKind::Resumed);
                    named.lock().unwrap().push((sni.clone(), resumed));
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let answer = format!(
                        "tls {}{} client-cert={client_cert}",
                        if h2 { "h2 " } else { "" },
                        sni.unwrap_or_default()
                    );
                    // "/close" answers with `connection: close`, so every request needs a
                    // new connection (and handshake).
                    // An `upgrade: echo` request becomes a tunnel that echoes every byte.
                    let service = hyper::service::service_fn(move |mut request: Request<_>| {
                        let mut response = Response::new(Full::new(Bytes::from(answer.clone())));
                        if request.uri().path() == "/close" {
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, "close".parse().unwrap());
                        }
                        if request.headers().contains_key(header::UPGRADE) {
                            let upgrade = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                let Ok(upgraded) = upgrade.await else { return };
                                let (mut read, mut write) =
                                    tokio::io::split(TokioIo::new(upgraded));
                                let _ = tokio::io::copy(&mut read, &mut write).await;
                            });
                            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            *response.body_mut() = Full::default();
                            let headers = response.headers_mut();
                            headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
                            headers.insert(header::UPGRADE, "echo".parse().unwrap());
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let io = TokioIo::new(tls);
                    let _ = match h2 {
                        true => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        }
                        false => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .with_upgrades()
                                .await
                        }
                    };
                });
            }
        });
        TlsUpstream {
            addr,
            handshakes,
            names,
            task,
        }
    }
}

/// A GET with this Host on a keep-alive connection to the proxy: status and body.
async fn get(client: &mut Client, host: &str) -> (StatusCode, String) {
    let request = Request::get("/")
        .header(header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = client.send(request).await;
    (reply.status, reply.body)
}

fn service(name: &str, host: &str, endpoint: &str, tls: &str) -> String {
    format!(
        "\n[services.{name}]\nhosts = [\"{host}\"]\nstable = \"v1\"\nweights = {{ v1 = 1 }}\n\n\
         [services.{name}.versions.v1]\nendpoints = [\"{endpoint}\"]\ntls = {tls}\n"
    )
}

#[tokio::test]
async fn a_certificate_signed_by_the_configured_ca_works_connections_are_reused_and_sessions_resumed(
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let upstream = TlsUpstream::start(&ca.issue(&["api.internal"], false, false), None).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"api.internal\" }}",
        ca_path.display()
    );
    let proxy = TestProxy::start(&service(
        "shop",
        "shop.test",
        &upstream.addr.to_string(),
        &tls,
    ))
    .await;
    let mut client = Client::connect(proxy.addr()).await;
    for _ in 0..20 {
        let (status, body) = get(&mut client, "shop.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "tls api.internal client-cert=false");
    }
    // One handshake served all twenty: the pooled TLS connection was reused.
    assert_eq!(upstream.handshakes.load(Ordering::SeqCst), 1);

    // An upgrade becomes a tunnel through a TLS connection of its own.
    let mut tunnel = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tunnel
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: shop.test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tunnel.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tunnel.write_all(b"ping through TLS").await.unwrap();
    let mut echoed = [0u8; 16];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through TLS");
    drop(tunnel);
    assert_eq!(upstream.handshakes.load(Ordering::SeqCst), 2);

    // New connections (the tunnel's, and the one after a `connection: close`) resume
    // the TLS session instead of a full handshake.
    for path in ["/close", "/"] {
        let request = Request::get(path)
            .header(header::HOST, "shop.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(client.send(request).await.status, StatusCode::OK);
    }
    let name = Some("api.internal".to_string());
    assert_eq!(
        *upstream.names.lock().unwrap(),
        [
            (name.clone(), false),
            (name.clone(), true),
            (name.clone(), true)
        ]
    );
}

#[tokio::test]
async fn the_endpoint_is_verified_as_the_name_or_address_it_is_written_with() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let by_name = TlsUpstream::start(&ca.issue(&["localhost"], false, false), None).await;
    let by_ip = TlsUpstream::start(&ca.issue(&["127.0.0.1"], false, false), None).await;
    let tls = format!("{{ ca = \"{}\" }}", ca_path.display());
    let config = service(
        "named",
        "named.test",
        &format!("localhost:{}", by_name.addr.port()),
        &tls,
    ) + &service("ip", "ip.test", &by_ip.addr.to_string(), &tls);
    let proxy = TestProxy::start(&config).await;
    let mut client = Client::connect(proxy.addr()).await;
    let (status, body) = get(&mut client, "named.test").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "tls localhost client-cert=false")
    );
    let (status, body) = get(&mut client, "ip.test").await;
    // An address is verified against the certificate's IP names, and sent as no SNI.
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "tls  client-cert=false")
    );
    assert_eq!(*by_ip.names.lock().unwrap(), [(None, false)]);
}

/// The real binary in front of a wrong CA, an expired certificate and a wrong name.
#[tokio::test]
async fn a_wrong_ca_an_expired_certificate_and_a_wrong_name_are_each_refused_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let other_ca = Ca::new("someone else's CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let other_path = other_ca.write(dir.path(), "other-ca.pem");
    let good = TlsUpstream::start(&ca.issue(&["api.internal"], false, false), None).await;
    let expired = TlsUpstream::start(&ca.issue(&["api.internal"], false, true), None).await;
    let tls = |ca: &Path, name: &str| {
        format!("{{ ca = \"{}\", server_name = \"{name}\" }}", ca.display())
    };
    let services = [
        service(
            "unknown",
            "unknown.test",
            &good.addr.to_string(),
            &tls(&other_path, "api.internal"),
        ),
        service(
            "expired",
            "expired.test",
            &expired.addr.to_string(),
            &tls(&ca_path, "api.internal"),
        ),
        service(
            "misnamed",
            "misnamed.test",
            &good.addr.to_string(),
            &tls(&ca_path, "wrong.internal"),
        ),
    ];
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nsocket = \"{}\"\n\n[state]\ndir = \"{}\"\n{}",
            socket.display(),
            dir.path().join("state").display(),
            services.concat()
        ),
    )
    .unwrap();
    let setup = Setup {
        dir,
        config,
        socket,
    };
    let proxy = Proxy::start(&setup, &[]).await;
    let mut client = Client::connect(proxy.addr).await;
    for host in ["unknown.test", "expired.test", "misnamed.test"] {
        for _ in 0..3 {
            let (status, body) = get(&mut client, host).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{host}: {body}");
            assert_eq!(body, "upstream TLS handshake failed\n", "{host}");
        }
    }
    // Counted against each endpoint: out of the rotation, and the version's errors.
    let status = setup.client().status().await.unwrap();
    for service in &status.services {
        let version = &service.versions[0];
        assert_eq!(
            version.refusing.as_ref().unwrap(),
            &version.endpoints,
            "{}",
            service.name
        );
        assert!(version.errors_per_sec > 0.0, "{}", service.name);
    }
    assert_eq!(good.handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(expired.handshakes.load(Ordering::SeqCst), 0);

    let log = proxy.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS to the endpoint refused"))
        .collect();
    for (endpoint, reason) in [
        (
            good.addr,
            "certificate not signed by a trusted CA (unknown issuer), checked against tls.ca",
        ),
        (expired.addr, "certificate expired"),
        (
            good.addr,
            "certificate not valid for the name \"wrong.internal\" (it is for api.internal)",
        ),
    ] {
        let lines: Vec<&&str> = refused
            .iter()
            .filter(|l| l.contains(reason) && l.contains(&endpoint.to_string()))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one line for {reason:?} at {endpoint}:\n{log}"
        );
    }
    assert_eq!(refused.len(), 3, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn mutual_tls_works_with_a_client_certificate_and_is_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let (cert, key) = clients
        .issue(&["proxy.internal"], true, false)
        .write(dir.path(), "client");
    let (stranger_cert, stranger_key) = Ca::new("stranger CA")
        .issue(&["proxy.internal"], true, false)
        .write(dir.path(), "stranger");
    let upstream =
        TlsUpstream::start(&ca.issue(&["api.internal"], false, false), Some(&clients)).await;
    let base = format!(
        "ca = \"{}\", server_name = \"api.internal\"",
        ca_path.display()
    );
    let addr = upstream.addr.to_string();
    let config = service(
        "mutual",
        "mutual.test",
        &addr,
        &format!(
            "{{ {base}, cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    ) + &service(
        "anonymous",
        "anonymous.test",
        &addr,
        &format!("{{ {base} }}"),
    ) + &service(
        "stranger",
        "stranger.test",
        &addr,
        &format!(
            "{{ {base}, cert = \"{}\", key = \"{}\" }}",
            stranger_cert.display(),
            stranger_key.display()
        ),
    );
    let proxy = TestProxy::start(&config).await;
    let mut client = Client::connect(proxy.addr()).await;
    for _ in 0..3 {
        let (status, body) = get(&mut client, "mutual.test").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "tls api.internal client-cert=true")
        );
    }
    for host in ["anonymous.test", "stranger.test"] {
        let (status, body) = get(&mut client, host).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{host}: {body}");
        assert_eq!(body, "upstream TLS handshake failed\n", "{host}");
    }
    let status = proxy.admin().status().await.unwrap();
    for service in status.services.iter().filter(|s| s.name != "mutual") {
        let version = &service.versions[0];
        assert_eq!(
            version.refusing.as_ref().unwrap(),
            &version.endpoints,
            "{}",
            service.name
        );
    }
}

#[tokio::test]
async fn health_and_smoke_checks_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let other = Ca::new("someone else's CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let good = TlsUpstream::start(&ca.issue(&["api.internal"], false, false), None).await;
    let bad = TlsUpstream::start(&other.issue(&["api.internal"], false, false), None).await;
    let unwatched = TlsUpstream::start(&other.issue(&["api.internal"], false, false), None).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"api.internal\" }}",
        ca_path.display()
    );
    let config = format!(
        r#"
[services.shop]
stable = "good"
weights = {{ good = 1, bad = 0 }}

[services.shop.health]
path = "/healthz"
interval = "200ms"
timeout = "200ms"
fall = 1
rise = 1

[services.shop.versions.good]
endpoints = ["{}"]
tls = {tls}

[services.shop.versions.bad]
endpoints = ["{}"]
tls = {tls}
{}"#,
        good.addr,
        bad.addr,
        service(
            "unwatched",
            "unwatched.test",
            &unwatched.addr.to_string(),
            &tls
        )
    );
    let proxy = TestProxy::start(&config).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let (good_health, bad_health) = loop {
        let board = proxy.proxy.verifier.health.snapshot();
        match (board.get(&good.addr), board.get(&bad.addr)) {
            (Some(g), Some(b)) if g.checks > 0 && !b.up => break (g.clone(), b.clone()),
            _ if Instant::now() > deadline => panic!("health checks did not settle: {board:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(
        good_health.up && good_health.failures == 0,
        "{good_health:?}"
    );
    let got = bad_health.last_failure.unwrap_or_default();
    assert!(
        got.starts_with("TLS refused: certificate not signed by a trusted CA"),
        "{got}"
    );

    let admin = proxy.admin();
    let run = admin.checks("shop", Some("good".into())).await.unwrap();
    assert!(run.passed, "{run:?}");
    assert!(
        run.runs[0].results[0].got.starts_with("accepted in"),
        "{run:?}"
    );
    // Without health checks to hold it out, the smoke check meets the bad certificate.
    let run = admin.checks("unwatched", None).await.unwrap();
    assert!(!run.passed);
    let failed = &run.runs[0].report.failed;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].endpoint, unwatched.addr.to_string());
    assert!(
        failed[0]
            .got
            .starts_with("TLS refused: certificate not signed by a trusted CA"),
        "{failed:?}"
    );
}

#[test]
fn check_lists_each_bad_tls_setting_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let (cert, _) = ca
        .issue(&["proxy.internal"], true, false)
        .write(dir.path(), "client");
    let (_, other_key) = ca
        .issue(&["other.internal"], true, false)
        .write(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let version = |name: &str, tls: String| {
        format!("[services.shop.versions.{name}]\nendpoints = [\"127.0.0.1:9001\"]\ntls = {tls}\n")
    };
    let lines = [
        "[proxy]\nlisten = \"127.0.0.1:0\"\n".to_string(), // 1-2
        "[services.shop]\nstable = \"a\"\nweights = { a = 1 }\n".to_string(), // 3-5
        version("a", format!("{{ ca = \"{}\" }}", missing.display())), // 6-8
        version("b", format!("{{ ca = \"{}\" }}", garbage.display())), // 9-11
        version(
            "c",
            format!(
                "{{ ca = \"{}\", cert = \"{}\" }}",
                ca_path.display(),
                cert.display()
            ),
        ), // 12-14
        version(
            "d",
            format!(
                "{{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
                ca_path.display(),
                cert.display(),
                other_key.display()
            ),
        ), // 15-17
        version(
            "e",
            format!(
                "{{ ca = \"{}\", server_name = \"not a name!\" }}",
                ca_path.display()
            ),
        ), // 18-20
        version("f", "{ sni = \"api.internal\" }".to_string()), // 21-23
    ];
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, lines.concat()).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let file = path.display().to_string();
    for (line, words) in [
        (8, vec!["versions.a.tls.ca", "missing.pem", "No such file"]),
        (
            11,
            vec![
                "versions.b.tls.ca",
                "garbage.pem",
                "not a valid certificate (badly encoded)",
            ],
        ),
        (14, vec!["versions.c.tls.cert needs tls.key"]),
        (
            17,
            vec![
                "versions.d.tls.key does not go with tls.cert",
                "not the certificate's",
            ],
        ),
        (
            20,
            vec!["versions.e.tls.server_name \"not a name!\" is not a DNS name or IP address"],
        ),
        (23, vec!["sni"]),
    ] {
        let prefix = format!("{file}:{line}: ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && words.iter().all(|w| l.contains(w))),
            "no problem at line {line} with {words:?}:\n{text}"
        );
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&file)).count(),
        6,
        "{text}"
    );
}

#[tokio::test]
async fn a_reload_with_a_bad_tls_file_is_refused_with_its_line_and_changes_nothing_and_a_good_one_keeps_the_connection(
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let upstream = TlsUpstream::start(&ca.issue(&["api.internal"], false, false), None).await;
    let config = |ca: &Path| {
        service(
            "shop",
            "shop.test",
            &upstream.addr.to_string(),
            &format!(
                "{{ ca = \"{}\", server_name = \"api.internal\" }}",
                ca.display()
            ),
        )
    };
    let proxy = TestProxy::start(&config(&ca_path)).await;
    let mut client = Client::connect(proxy.addr()).await;
    assert_eq!(get(&mut client, "shop.test").await.0, StatusCode::OK);

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "just some text\n").unwrap();
    proxy.rewrite(&config(&garbage));
    let (status, body) = proxy
        .admin()
        .raw(Method::POST, "/reload", Bytes::new())
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("garbage.pem: no PEM certificate in the file"),
        "{body}"
    );
    assert!(body.contains("switchyard.toml:"), "{body}");
    // The running config is untouched: the same pooled connection still serves.
    assert_eq!(get(&mut client, "shop.test").await.0, StatusCode::OK);
    assert_eq!(upstream.handshakes.load(Ordering::SeqCst), 1);

    // Back to the good file: the reload builds nothing new (the same client, so the same
    // endpoint and its pooled connection), and serves on without a handshake.
    proxy.rewrite(&config(&ca_path));
    let (status, body) = proxy
        .admin()
        .raw(Method::POST, "/reload", Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get(&mut client, "shop.test").await.0, StatusCode::OK);
    assert_eq!(upstream.handshakes.load(Ordering::SeqCst), 1);
}

/// A canary deployed with a certificate that does not verify is as unreachable as one
/// that is down: the user is served by stable, and the guard cuts the canary back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_certificate_does_not_verify_is_cut_back_and_users_are_served_by_stable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let stable = upstream("blue").await;
    let canary = TlsUpstream::start(&ca.issue(&["api.internal"], false, true), None).await;
    let config = format!(
        r#"
[services.shop]
stable = "blue"
weights = {{ blue = 90, canary = 10 }}

[[services.shop.match]]
header = "x-canary"
value = "1"
version = "canary"

[services.shop.versions.blue]
endpoints = ["{}"]

[services.shop.versions.canary]
endpoints = ["{}"]
tls = {{ ca = "{}", server_name = "api.internal" }}
"#,
        stable.addr,
        canary.addr,
        ca_path.display()
    );
    let proxy = TestProxy::start(&config).await;
    let mut client = Client::connect(proxy.addr()).await;
    let request = Request::get("/")
        .header(header::HOST, "shop.test")
        .header("x-canary", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = client.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.version.as_deref(), Some("blue"));
    assert_eq!(reply.headers["switchyard-retried-from"], "canary");

    let deadline = Instant::now() + Duration::from_secs(5);
    let incident = loop {
        if let Some(incident) = proxy.proxy.incidents.list(None).pop() {
            break incident;
        }
        assert!(Instant::now() < deadline, "the canary was not cut back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(incident.version, "canary", "{incident:?}");
    let table = proxy.proxy.controller.plane.table.load();
    let service = &table.services()[0];
    assert_eq!(service.share_of(service.stable), 1.0);
}

#[tokio::test]
async fn an_upstream_that_speaks_only_h2_refuses_an_http1_version_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let upstream =
        TlsUpstream::start_with(&ca.issue(&["api.internal"], false, false), None, &[b"h2"]).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"api.internal\" }}",
        ca_path.display()
    );
    let proxy = TestProxy::start(&service(
        "shop",
        "shop.test",
        &upstream.addr.to_string(),
        &tls,
    ))
    .await;
    let table = proxy.proxy.controller.plane.table.load();
    let endpoint = table.services()[0].versions[0].endpoints[0].clone();
    let err = endpoint.checkout(Instant::now()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "TLS to {} (name \"api.internal\") refused: the upstream speaks none of the application protocols offered (ALPN)",
            upstream.addr
        )
    );
    let mut client = Client::connect(proxy.addr()).await;
    let (status, body) = get(&mut client, "shop.test").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream TLS handshake failed\n")
    );
}

/// `protocol = "h2"`: HTTP/2 over TLS chosen by ALPN, for requests and for health and
/// smoke checks alike; an upstream that does not choose h2 is refused with the reason.
#[tokio::test]
async fn h2_over_tls_serves_requests_and_checks_and_an_upstream_without_h2_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let issued = ca.issue(&["api.internal"], false, false);
    // h2 only, as gRPC servers are; HTTP/1.1 only; no ALPN at all.
    let h2 = TlsUpstream::start_with(&issued, None, &[b"h2"]).await;
    let http1 = TlsUpstream::start_with(&issued, None, &[b"http/1.1"]).await;
    let silent = TlsUpstream::start_with(&issued, None, &[]).await;
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"api.internal\" }}",
        ca_path.display()
    );
    let h2_service = |name: &str, addr: SocketAddr, extra: &str| {
        format!(
            "\n[services.{name}]\nhosts = [\"{name}.test\"]\nstable = \"v1\"\nweights = {{ v1 = 1 }}\n{extra}\n\
             [services.{name}.versions.v1]\nendpoints = [\"{addr}\"]\nprotocol = \"h2\"\ntls = {tls}\n"
        )
    };
    let checked = "\n[services.good.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\n\
                   [[services.good.checks]]\nname = \"home\"\npath = \"/\"\nexpect_body = \"tls h2 api.internal\"\n";
    let config = h2_service("good", h2.addr, checked)
        + &h2_service("bare", h2.addr, "")
        + &h2_service("http1", http1.addr, "")
        + &h2_service("silent", silent.addr, "");
    let proxy = TestProxy::start(&config).await;
    let mut client = Client::connect(proxy.addr()).await;
    for _ in 0..3 {
        let (status, body) = get(&mut client, "good.test").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "tls h2 api.internal client-cert=false")
        );
    }

    // Health checks and smoke checks speak HTTP/2 over TLS too; the bare connect check
    // (a service without smoke checks) completes the handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let board = proxy.proxy.verifier.health.snapshot();
        match board.get(&h2.addr) {
            Some(health) if health.checks >= 2 => {
                assert!(health.up && health.failures == 0, "{health:?}");
                break;
            }
            _ if Instant::now() > deadline => panic!("no health checks: {board:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let admin = proxy.admin();
    for service in ["good", "bare"] {
        let run = admin.checks(service, None).await.unwrap();
        assert!(run.passed, "{run:?}");
    }

    for (name, upstream, reason) in [
        (
            "http1",
            &http1,
            "the upstream speaks none of the application protocols offered (ALPN)",
        ),
        ("silent", &silent, "the upstream did not choose h2 (ALPN)"),
    ] {
        let (status, body) = get(&mut client, &format!("{name}.test")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{name}: {body}");
        let table = proxy.proxy.controller.plane.table.load();
        let service = table.services().iter().find(|s| &*s.name == name).unwrap();
        let err = service.versions[0].endpoints[0]
            .h2_stream()
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "TLS to {} (name \"api.internal\") refused: {reason}",
                upstream.addr
            )
        );
    }
}

/// `tls = {}` verifies against the system's CA certificates, as found by the platform's
/// rules: here the real binary with `SSL_CERT_FILE` naming the test CA as the system store.
#[tokio::test]
async fn an_empty_tls_table_verifies_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_path = ca.write(dir.path(), "system-ca.pem");
    let upstream = TlsUpstream::start(&ca.issue(&["127.0.0.1"], false, false), None).await;
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nsocket = \"{}\"\n\n[state]\ndir = \"{}\"\n{}",
            socket.display(),
            dir.path().join("state").display(),
            service("shop", "shop.test", &upstream.addr.to_string(), "{}")
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("SSL_CERT_FILE", &ca_path)
        .env_remove("SSL_CERT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin = switchyard::ctl::client::AdminClient::new(&socket);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(status) = admin.status().await {
            break status;
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "switchyard did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut client = Client::connect(status.listen.parse().unwrap()).await;
    let (code, body) = get(&mut client, "shop.test").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (code, body.as_str()),
        (StatusCode::OK, "tls  client-cert=false")
    );
}

/// A reload reads the TLS files again: a CA file replaced in place takes effect, with
/// new connections (the endpoint with the old settings is not reused).
#[tokio::test]
async fn a_reload_reads_a_replaced_ca_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let ca_path = old_ca.write(dir.path(), "ca.pem");
    let upstream = TlsUpstream::start(&new_ca.issue(&["api.internal"], false, false), None).await;
    let config = service(
        "shop",
        "shop.test",
        &upstream.addr.to_string(),
        &format!(
            "{{ ca = \"{}\", server_name = \"api.internal\" }}",
            ca_path.display()
        ),
    );
    let proxy = TestProxy::start(&config).await;
    let mut client = Client::connect(proxy.addr()).await;
    assert_eq!(
        get(&mut client, "shop.test").await.0,
        StatusCode::BAD_GATEWAY
    );

    new_ca.write(dir.path(), "ca.pem");
    proxy.rewrite(&config);
    let (status, body) = proxy
        .admin()
        .raw(Method::POST, "/reload", Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, body) = get(&mut client, "shop.test").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "tls api.internal client-cert=false")
    );
}
