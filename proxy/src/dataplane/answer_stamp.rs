//! What the proxy stamps on every answer: the request's id, this proxy in Via, the
//! version that served it (`version_header`), a new sticky cookie, and the version a
//! retried request failed on. Kept beside the answer, not in its map: switchyard's HTTP/1
//! writer puts them after the answer's own fields (Via and Set-Cookie beside the
//! upstream's, the others in place of any field of their name); hyper's HTTP/2 side gets
//! them set in the map.

use super::forwarding::VIA_SELF_VALUE;
use super::headers::add_via;
use super::request_id::X_REQUEST_ID;
use crate::http1::SetFields;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static VIA: HeaderName = header::VIA;
static SET_COOKIE: HeaderName = header::SET_COOKIE;
/// Tells the client which version failed before stable answered.
static RETRIED_FROM: HeaderName = HeaderName::from_static("switchyard-retried-from");

#[derive(Debug)]
pub struct AnswerStamp {
    request_id: HeaderValue,
    retried_from: Option<HeaderValue>,
    via: bool,
    version: Option<(HeaderName, HeaderValue)>,
    cookie: Option<HeaderValue>,
}

impl AnswerStamp {
    pub fn new(request_id: HeaderValue) -> AnswerStamp {
        AnswerStamp {
            request_id,
            retried_from: None,
            via: false,
            version: None,
            cookie: None,
        }
    }

    /// This proxy's element of Via.
    pub fn add_via(&mut self) {
        self.via = true;
    }

    /// The version that served the answer, under the configured name.
    pub fn add_version(&mut self, name: HeaderName, value: HeaderValue) {
        self.version = Some((name, value));
    }

    /// A new sticky cookie.
    pub fn add_cookie(&mut self, value: HeaderValue) {
        self.cookie = Some(value);
    }

    /// The version that failed before stable answered.
    pub fn add_retried_from(&mut self, version: HeaderValue) {
        self.retried_from = Some(version);
    }

    /// For the HTTP/1 writer, in the order they are written.
    pub fn fields(&self) -> SetFields<'_> {
        let mut fields = SetFields::new();
        fields.push(&X_REQUEST_ID, &self.request_id);
        if let Some(version) = &self.retried_from {
            fields.push(&RETRIED_FROM, version);
        }
        if self.via {
            fields.push(&VIA, &VIA_SELF_VALUE);
        }
        if let Some((name, value)) = &self.version {
            fields.push(name, value);
        }
        if let Some(cookie) = &self.cookie {
            fields.push(&SET_COOKIE, cookie);
        }
        fields
    }

    /// Sets them in a map that goes out as it is (an HTTP/2 client's answer): Via joins
    /// the upstream's, a cookie is one more, the others replace.
    pub fn set_in(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields().as_slice() {
            if *name == header::VIA {
                add_via(headers);
            } else if *name == header::SET_COOKIE {
                headers.append(*name, (*value).clone());
            } else {
                headers.insert(*name, (*value).clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_map_via_joins_a_cookie_is_added_and_the_rest_replace() {
        let mut stamp = AnswerStamp::new(HeaderValue::from_static("id-1"));
        stamp.add_via();
        let version = HeaderName::from_static("switchyard-version");
        stamp.add_version(version.clone(), HeaderValue::from_static("green"));
        stamp.add_cookie(HeaderValue::from_static("sy=1"));
        stamp.add_retried_from(HeaderValue::from_static("canary"));
        let fields = stamp.fields();
        let names: Vec<_> = fields.as_slice().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-request-id",
                "switchyard-retried-from",
                "via",
                "switchyard-version",
                "set-cookie"
            ]
        );

        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("theirs"));
        headers.insert(header::VIA, HeaderValue::from_static("1.0 cache"));
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.insert(&version, HeaderValue::from_static("forged"));
        stamp.set_in(&mut headers);
        assert_eq!(headers[&X_REQUEST_ID], "id-1");
        assert_eq!(headers[header::VIA], "1.0 cache, 1.1 switchyard");
        assert_eq!(headers[&version], "green");
        assert_eq!(headers[&RETRIED_FROM], "canary");
        let cookies: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "sy=1"]);
    }

    #[test]
    fn a_plain_answer_carries_its_id_only() {
        let stamp = AnswerStamp::new(HeaderValue::from_static("id"));
        assert_eq!(stamp.fields().as_slice().len(), 1);
    }
}
