//! A one-shot plain HTTP/1.1 exchange on a fresh connection: the Prometheus queries and the
//! rollout's webhook gates. The caller bounds it in time; the answer is bounded in size.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The most of an answer read.
const ANSWER_LIMIT: usize = 256 * 1024;

/// Sends `body` (JSON when there is one) to `url` and reads the status and the answer's
/// body; the error is one line (connection refused, reset...).
pub async fn exchange(
    method: Method,
    url: &Uri,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let authority = url.authority().ok_or("no host in the URL")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, authority.port_u16().unwrap_or(80)))
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    // The connection task ends with the exchange, or when this future is dropped.
    tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json");
    if !body.is_empty() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(body))
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), ANSWER_LIMIT)
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    Ok((status, body))
}
