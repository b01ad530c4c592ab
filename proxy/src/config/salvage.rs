//! Reads a config past its first problem. The TOML deserializer stops at the first
//! unknown key or bad value; here each rejected part (a `key = value` line, or a whole
//! `[table]` whose name is wrong) is reported, blanked out with spaces (so every offset and
//! line stays where it was), and the file read again. `check` so lists every problem.

use serde::de::DeserializeOwned;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table};

/// More rounds than this and the file is hopeless; what was found is reported.
const MAX_ROUNDS: usize = 100;

/// The file as `T`, or `None` when some problem could not be read past. Every problem
/// goes to `report` with its byte span in `text`.
pub fn deserialize_all<T: DeserializeOwned>(
    text: &str,
    mut report: impl FnMut(Range<usize>, String),
) -> Option<T> {
    if let Err(err) = ImDocument::parse(text) {
        report(err.span().unwrap_or(0..0), one_line(err.message()));
        return None;
    }
    let mut salvaged = text.to_string();
    let mut cut_keys: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match toml::from_str::<T>(&salvaged) {
            Ok(file) => return Some(file),
            Err(err) => err,
        };
        let message = one_line(err.message());
        // A required key that we cut out ourselves is not a problem of its own.
        if cut_keys
            .iter()
            .any(|key| message == format!("missing field `{key}`"))
        {
            return None;
        }
        let span = err.span().unwrap_or(0..0);
        report(span.clone(), message);
        let (unit, key) = narrowest_unit(&salvaged, span.start)?;
        let blanked = blank(&salvaged, unit);
        // Never report what a cut made up: stop if the file no longer parses.
        ImDocument::parse(blanked.as_str()).ok()?;
        salvaged = blanked;
        cut_keys.push(key);
    }
    None
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Spaces instead of every character of `unit` but line breaks.
fn blank(text: &str, unit: Range<usize>) -> String {
    let mut out = String::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        match (unit.contains(&at), c) {
            (true, '\n') | (false, _) => out.push(c),
            (true, _) => out.extend(std::iter::repeat_n(' ', c.len_utf8())),
        }
    }
    out
}

/// The smallest `key = value` pair or `[table]` (header to the next header) holding
/// `offset`, with its key name.
fn narrowest_unit(text: &str, offset: usize) -> Option<(Range<usize>, String)> {
    let document = ImDocument::parse(text).ok()?;
    let mut units = Vec::new();
    let mut headers = Vec::new();
    collect(document.as_table(), &mut units, &mut headers);
    headers.sort_unstable();
    let tables = headers.iter().map(|&(start, ref key)| {
        let end = headers
            .iter()
            .map(|&(next, _)| next)
            .find(|&next| next > start)
            .unwrap_or(text.len());
        (start..end, key.clone())
    });
    units
        .into_iter()
        .chain(tables)
        .filter(|(unit, _)| unit.contains(&offset))
        .min_by_key(|(unit, _)| unit.len())
}

/// Pairs (`key = value`, key start to value end) and table header starts, recursively.
fn collect(
    table: &Table,
    units: &mut Vec<(Range<usize>, String)>,
    headers: &mut Vec<(usize, String)>,
) {
    for (name, item) in table.iter() {
        match item {
            Item::Value(value) => {
                let key = table.key(name).and_then(|key| key.span());
                if let (Some(key), Some(value)) = (key, value.span()) {
                    units.push((key.start..value.end, name.to_string()));
                }
            }
            Item::Table(inner) => {
                header(inner, name, headers);
                collect(inner, units, headers);
            }
            Item::ArrayOfTables(array) => {
                for inner in array.iter() {
                    header(inner, name, headers);
                    collect(inner, units, headers);
                }
            }
            Item::None => {}
        }
    }
}

fn header(table: &Table, name: &str, headers: &mut Vec<(usize, String)>) {
    if table.is_implicit() || table.is_dotted() {
        return;
    }
    if let Some(span) = table.span() {
        headers.push((span.start, name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        a: Section,
        #[serde(default)]
        b: Option<Section>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        n: u32,
        #[serde(default)]
        s: Option<String>,
    }

    fn problems(text: &str) -> (Option<File>, Vec<String>) {
        let mut found = Vec::new();
        let file = deserialize_all::<File>(text, |span, message| {
            let line = text[..span.start].matches('\n').count() + 1;
            found.push(format!("{line}: {message}"));
        });
        (file, found)
    }

    #[test]
    fn every_unknown_key_and_bad_value_is_reported_with_its_line() {
        let text = "[a]\nn = 1\nx = 2\ns = 3\ny = \"z\"\n\n[c]\nq = 1\n\n[b]\nn = \"one\"\n";
        let (ok, found) = problems(text);
        assert_eq!(found.len(), 5, "{found:?}");
        for line in ["3:", "4:", "5:", "7:", "11:"] {
            assert!(
                found.iter().any(|p| p.starts_with(line)),
                "{line} {found:?}"
            );
        }
        assert!(ok.is_none());
    }

    #[test]
    fn a_cut_required_key_is_not_reported_again_and_syntax_errors_stop() {
        let (_, found) = problems("[a]\nn = \"x\"\nbad = 1\n");
        assert_eq!(found.len(), 2, "{found:?}");
        let (_, found) = problems("[a]\nn = = 1\n");
        assert_eq!(found.len(), 1, "{found:?}");
        let (file, found) = problems("[a]\nn = 1\n");
        let file = file.expect("a good file reads");
        assert!(found.is_empty());
        assert_eq!((file.a.n, file.a.s, file.b.is_none()), (1, None, true));
    }
}
