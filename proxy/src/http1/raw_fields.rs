//! A response head's fields kept as the upstream wrote them, for an answer that only
//! switchyard's own HTTP/1 writer reads: no `HeaderMap` is built, and each kept field is
//! copied out of the head's bytes as one line.

use super::fields::FieldKind;
use super::SetField;
use bytes::Bytes;
use http::header;

/// Heads with more fields than this are read into a map instead.
pub const MAX_LINES: usize = 32;

/// Where one kept field sits in the head: `name: value` is `start..end`, its name
/// `start..name_end`.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: u32,
    name_end: u32,
    end: u32,
    kind: FieldKind,
}

const NO_LINE: Line = Line {
    start: 0,
    name_end: 0,
    end: 0,
    kind: FieldKind::Other,
};

/// The fields of a parsed head that pass through, in their order. Boxed where it is
/// made: one allocation, and the answer that carries it stays small to move.
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    count: usize,
    lines: [Line; MAX_LINES],
}

/// Fields the proxy appends to (a list it adds its own element to) rather than replaces.
const APPENDED: [header::HeaderName; 2] = [header::VIA, header::SET_COOKIE];

impl RawFields {
    pub(super) fn new(head: Bytes) -> Box<RawFields> {
        Box::new(RawFields {
            head,
            count: 0,
            lines: [NO_LINE; MAX_LINES],
        })
    }

    /// Keeps the field whose name starts at `start`, `name_len` long, and whose value ends
    /// at `value_end` (the whitespace after the colon is the upstream's and stays). The
    /// caller keeps at most `MAX_LINES`.
    pub(super) fn keep(
        &mut self,
        kind: FieldKind,
        start: usize,
        name_len: usize,
        value_end: usize,
    ) {
        let name_end = start + name_len;
        // An empty value is the bare `name:`. The head is at most `MAX_HEAD` (64 KiB)
        // long: every offset fits.
        if let Some(line) = self.lines.get_mut(self.count) {
            *line = Line {
                start: start as u32,
                name_end: name_end as u32,
                end: value_end.max(name_end + 1) as u32,
                kind,
            };
            self.count += 1;
        }
    }

    /// Each field's kind, name and whole `name: value` text.
    pub fn iter(&self) -> impl Iterator<Item = (FieldKind, &[u8], &[u8])> {
        self.lines[..self.count].iter().map(|line| {
            let text = &self.head[line.start as usize..line.end as usize];
            let name = &text[..(line.name_end - line.start) as usize];
            (line.kind, name, text)
        })
    }
}

/// The fields the proxy set on an answer that replace an upstream field of the same name
/// (`x-request-id`, the version header), as a set of name lengths: a field whose length
/// is not in it is kept without comparing names. The lists it adds its own element to
/// (Via, Set-Cookie) replace nothing: they come after the upstream's.
pub fn replacing_lengths(set: &[SetField<'_>]) -> u64 {
    set.iter()
        .filter(|(name, _)| !APPENDED.contains(name))
        .fold(0, |lengths, (name, _)| {
            lengths | 1 << (name.as_str().len() % 64)
        })
}

/// Whether the upstream's field `name` gives way to one in `set` (see `replacing_lengths`,
/// whose answer is `lengths`).
pub fn replaced_by(name: &[u8], lengths: u64, set: &[SetField<'_>]) -> bool {
    lengths & (1 << (name.len() % 64)) != 0
        && set.iter().any(|(ours, _)| {
            ours.as_str().as_bytes().eq_ignore_ascii_case(name) && !APPENDED.contains(ours)
        })
}
