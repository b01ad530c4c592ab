//! Journal replay on any file: it opens (dropping a torn tail) or names the broken line,
//! never panics; with `accept_broken` it always opens, and reopens to what it kept on disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::control::journal::{Journal, JOURNAL_FILE};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(JOURNAL_FILE), data).expect("write");
    let strict = Journal::open(dir.path(), false).map(|opened| opened.records.len());
    drop(strict);
    let kept = Journal::open(dir.path(), true).expect("accept_broken always opens");
    // A broken chain is set aside and a new one begins empty; an intact one reads again.
    let count = match kept.broken {
        Some(_) => 0,
        None => kept.records.len(),
    };
    drop(kept);
    let again = Journal::open(dir.path(), false).expect("the journal reopens");
    assert_eq!(again.records.len(), count);
});
