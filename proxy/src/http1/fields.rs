//! What the fields of a head say about its framing and its connection, gathered in one
//! walk over them: the same rules for a request coming in and a response coming back.

/// Facts about framing and persistence gathered while walking the fields.
#[derive(Debug, Default)]
pub struct FieldFacts {
    pub length: Option<u64>,
    /// A Content-Length that is no number, or two that disagree.
    pub bad_length: bool,
    /// A Content-Length value that is a list ("5, 5").
    pub length_list: bool,
    pub transfer_encoding: bool,
    pub chunked_last: bool,
    /// Transfer-Encoding names a coding besides chunked (gzip...): it must reach the
    /// client, which the proxy re-frames, as a content coding.
    pub other_codings: bool,
    pub close: bool,
    pub keep_alive: bool,
    /// `Connection` names fields besides keep-alive and close.
    pub names_fields: bool,
    /// `Connection` names `upgrade`.
    pub upgrade: bool,
    pub expect_continue: bool,
    pub hosts: u8,
}

impl FieldFacts {
    pub fn note(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("content-length") {
            self.length_list |= value.contains(&b',');
            match (parse_length(value), self.length) {
                (Some(length), None) => self.length = Some(length),
                (Some(length), Some(seen)) if length == seen => {}
                _ => self.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = true;
            for coding in value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                let nothing = coding.is_empty() || coding.eq_ignore_ascii_case(b"identity");
                self.other_codings |= !chunked && !nothing;
                self.chunked_last = chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.names_fields |= !(close || keep_alive || token.is_empty());
            }
        } else if name.eq_ignore_ascii_case("host") {
            self.hosts = self.hosts.saturating_add(1);
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
}

/// A content-length value: digits only, or a list of one value repeated ("5, 5").
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let length = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        match found {
            Some(seen) if seen != length => return None,
            _ => found = Some(length),
        }
    }
    found
}
