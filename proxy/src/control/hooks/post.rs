//! One delivery attempt: a POST over a new connection, plain or TLS (certificates checked
//! against `[hooks] ca`, else the system's roots), answered 2xx or not.

use crate::config::TlsSettings;
use crate::upstream::tls::{tls_error_text, UpstreamTls};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What to send: the body and the headers beside it (event type, signature).
pub struct Delivery {
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub async fn post(url: &Uri, ca: Option<&PathBuf>, delivery: Delivery) -> Result<(), String> {
    let authority = url.authority().ok_or("no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tls = url.scheme_str() == Some("https");
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|err| err.to_string())?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::post(path)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(delivery.body))
        .map_err(|err| err.to_string())?;
    request.headers_mut().extend(delivery.headers);
    if !tls {
        return send(stream, request).await;
    }
    let settings = TlsSettings {
        ca: ca.cloned(),
        ..TlsSettings::default()
    };
    let client = UpstreamTls::build(&settings).map_err(|problems| {
        let whys: Vec<String> = problems.into_iter().map(|(_, why)| why).collect();
        whys.join("; ")
    })?;
    let name = ServerName::try_from(host.to_string()).map_err(|err| err.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(client.config().clone())
        .connect(name, stream)
        .await
        .map_err(|err| match err.get_ref().and_then(|e| e.downcast_ref()) {
            Some(tls) => tls_error_text(tls),
            None => err.to_string(),
        })?;
    send(stream, request).await
}

async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}
