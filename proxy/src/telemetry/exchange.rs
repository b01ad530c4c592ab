//! One exchange as the request path saw it: raw facts only, formatted later by the access
//! log's writer and the span exporter, off the request path.

use http::{HeaderValue, Method, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One exchange, as the request path saw it: raw facts only, formatted by the writer.
#[derive(Debug, Clone)]
pub struct Entry {
    pub start: SystemTime,
    pub duration: Duration,
    /// `None` for a connection refused before its request was read.
    pub method: Option<Method>,
    pub protocol: Option<Version>,
    /// The client came over TLS.
    pub tls: bool,
    pub status: u16,
    /// Why the exchange ended: "completed", "retried_on_stable", "client_gone",
    /// "refused_by_limit", "upstream_connect_failed", "upstream_timeout", ...
    pub end: &'static str,
    /// The request body's declared length, when it had one.
    pub bytes_in: Option<u64>,
    pub bytes_out: u64,
    /// From the request's start to the upstream's answer head.
    pub upstream: Option<Duration>,
    pub service: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    /// The upstream address that answered (or was last tried).
    pub endpoint: Option<SocketAddr>,
    pub revision: u64,
    pub trace_id: Option<[u8; 16]>,
    /// The client's address (the connection's, shared by its requests).
    pub client: HeaderValue,
    /// Authority, target, request id and user agent.
    pub text: RequestText,
}

/// What a header value that is not visible ASCII is logged as.
pub const NOT_TEXT: &str = "(not text)";

/// The request's own text fields, copied into one buffer: one allocation, and nothing of
/// the connection's read buffer held while the line waits for the writer (a cloned
/// `HeaderValue` would keep it, and make the connection allocate a new one).
#[derive(Debug, Clone, Default)]
pub struct RequestText {
    buffer: String,
    slots: [Slot; 4],
}

/// Where one field is in `RequestText`'s buffer.
#[derive(Debug, Clone, Copy, Default)]
enum Slot {
    #[default]
    Absent,
    NotText,
    At(u32, u32),
}

#[derive(Debug, Clone, Copy)]
pub enum TextField {
    Authority = 0,
    Target = 1,
    RequestId = 2,
    UserAgent = 3,
}

impl RequestText {
    pub fn with_capacity(capacity: usize) -> RequestText {
        RequestText {
            buffer: String::with_capacity(capacity),
            slots: Default::default(),
        }
    }

    /// Keeps `value` as `field`: `Err` for a header value that is not text.
    pub fn set<E>(&mut self, field: TextField, value: Option<Result<&str, E>>) {
        self.slots[field as usize] = match value {
            None => Slot::Absent,
            Some(Err(_)) => Slot::NotText,
            Some(Ok(text)) => {
                let from = self.buffer.len();
                self.buffer.push_str(text);
                match (u32::try_from(from), u32::try_from(self.buffer.len())) {
                    (Ok(from), Ok(to)) => Slot::At(from, to),
                    _ => Slot::NotText,
                }
            }
        };
    }

    /// The field's text, `NOT_TEXT` for a value that was not.
    pub fn get(&self, field: TextField) -> Option<&str> {
        match self.slots[field as usize] {
            Slot::Absent => None,
            Slot::NotText => Some(NOT_TEXT),
            Slot::At(from, to) => self.buffer.get(from as usize..to as usize),
        }
    }
}

impl Entry {
    pub fn authority(&self) -> Option<&str> {
        self.text.get(TextField::Authority)
    }

    /// The path with its query.
    pub fn target(&self) -> Option<&str> {
        self.text.get(TextField::Target)
    }

    pub fn request_id(&self) -> &str {
        self.text.get(TextField::RequestId).unwrap_or("-")
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.text.get(TextField::UserAgent)
    }

    pub fn client(&self) -> &str {
        self.client.to_str().unwrap_or(NOT_TEXT)
    }

    /// A connection refused at `max_connections`, before any request was read.
    pub fn refused(client: HeaderValue, tls: bool, revision: u64) -> Entry {
        Entry {
            start: SystemTime::now(),
            duration: Duration::ZERO,
            method: None,
            protocol: None,
            tls,
            status: 503,
            end: "refused_by_limit",
            bytes_in: None,
            bytes_out: 0,
            upstream: None,
            service: None,
            version: None,
            endpoint: None,
            revision,
            trace_id: None,
            client,
            text: RequestText::default(),
        }
    }
}
