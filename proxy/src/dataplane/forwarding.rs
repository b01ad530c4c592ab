//! What the proxy tells an upstream about a request's way to it: the request id, the
//! client appended to X-Forwarded-For, the scheme and authority the client used, and
//! this proxy appended to Via. Kept beside the request, not in its map: an HTTP/1
//! upstream gets them written after the client's fields, in place of any the client sent
//! under those names (a client cannot forge them), so passing a request on changes
//! nothing in its map. An HTTP/2 upstream and a shadow copy get them set in their map.

use super::request_id::X_REQUEST_ID;
use crate::http1::SetFields;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static VIA: HeaderName = header::VIA;

/// This proxy's element of Via (RFC 9110 7.6.3), requests and responses alike.
pub const VIA_SELF: &str = "1.1 switchyard";
pub static VIA_SELF_VALUE: HeaderValue = HeaderValue::from_static(VIA_SELF);
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The fields the proxy sets on one request going upstream.
#[derive(Debug)]
pub struct Forwarding {
    request_id: HeaderValue,
    forwarded_for: HeaderValue,
    tls: bool,
    via: HeaderValue,
    host: Option<HeaderValue>,
}

/// Who sent the request, as the upstream is told.
pub struct Client<'a> {
    pub ip: &'a HeaderValue,
    pub tls: bool,
}

impl Forwarding {
    /// The fields for a request whose fields are `headers`, from `client`, for `host`.
    pub fn new(
        headers: &HeaderMap,
        request_id: HeaderValue,
        client: Client<'_>,
        host: Option<&HeaderValue>,
    ) -> Forwarding {
        let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
            Some(previous) => appended(previous, client.ip.as_bytes(), client.ip),
            None => client.ip.clone(),
        };
        Forwarding {
            request_id,
            forwarded_for,
            tls: client.tls,
            via: via_after(headers.get(&VIA)),
            host: host.cloned(),
        }
    }

    /// For the HTTP/1 writer, or `set_in`.
    pub fn fields(&self) -> SetFields<'_> {
        let mut fields = SetFields::new();
        fields.push(&X_REQUEST_ID, &self.request_id);
        fields.push(&X_FORWARDED_FOR, &self.forwarded_for);
        fields.push(&X_FORWARDED_PROTO, if self.tls { &HTTPS } else { &HTTP });
        fields.push(&VIA, &self.via);
        if let Some(host) = &self.host {
            fields.push(&X_FORWARDED_HOST, host);
        }
        fields
    }

    /// Sets them in a map that goes out as it is.
    pub fn set_in(&self, headers: &mut HeaderMap) {
        crate::http1::set_in(self.fields().as_slice(), headers);
    }
}

/// Via with this proxy appended to what earlier hops wrote.
pub fn via_after(previous: Option<&HeaderValue>) -> HeaderValue {
    match previous {
        Some(previous) => appended(previous, VIA_SELF.as_bytes(), &VIA_SELF_VALUE),
        None => VIA_SELF_VALUE.clone(),
    }
}

/// `previous, element`; `fallback` if that is no field value.
fn appended(previous: &HeaderValue, element: &[u8], fallback: &HeaderValue) -> HeaderValue {
    let mut joined = Vec::with_capacity(previous.len() + 2 + element.len());
    joined.extend_from_slice(previous.as_bytes());
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(element);
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| fallback.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(forwarding: &Forwarding) -> Vec<(String, String)> {
        let text = |v: &HeaderValue| v.to_str().unwrap().to_string();
        let fields = forwarding.fields();
        let pairs = fields.as_slice().iter();
        pairs
            .map(|(name, value)| (name.to_string(), text(value)))
            .collect()
    }

    #[test]
    fn the_client_and_this_proxy_are_appended_to_what_came() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("forged"));
        let ip = HeaderValue::from_static("192.0.2.7");
        let client = Client { ip: &ip, tls: true };
        let host = HeaderValue::from_static("shop");
        let id = HeaderValue::from_static("id-1");
        let forwarding = Forwarding::new(&headers, id, client, Some(&host));
        let want = [
            ("x-request-id", "id-1"),
            ("x-forwarded-for", "10.0.0.1, 192.0.2.7"),
            ("x-forwarded-proto", "https"),
            ("via", "1.1 edge, 1.1 switchyard"),
            ("x-forwarded-host", "shop"),
        ];
        let want: Vec<_> = want.map(|(n, v)| (n.to_string(), v.to_string())).into();
        assert_eq!(written(&forwarding), want);

        forwarding.set_in(&mut headers);
        assert_eq!(headers.len(), 5);
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.1, 192.0.2.7");
    }

    #[test]
    fn a_request_without_authority_gets_no_forwarded_host() {
        let ip = HeaderValue::from_static("192.0.2.7");
        let client = Client {
            ip: &ip,
            tls: false,
        };
        let id = HeaderValue::from_static("id-2");
        let forwarding = Forwarding::new(&HeaderMap::new(), id, client, None);
        let names: Vec<_> = written(&forwarding).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "x-request-id",
                "x-forwarded-for",
                "x-forwarded-proto",
                "via"
            ]
        );
        assert_eq!(written(&forwarding)[1].1, "192.0.2.7");
        assert_eq!(written(&forwarding)[2].1, "http");
    }
}
