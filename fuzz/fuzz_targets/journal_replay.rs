//! Journal replay on any file: it opens (dropping a torn tail) or names the broken line,
//! never panics; with `accept_broken` it always opens, and what it kept replays again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::control::journal::{Journal, JOURNAL_FILE};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(JOURNAL_FILE), data).expect("write");
    let strict = Journal::open(dir.path(), false).map(|opened| opened.records.len());
    drop(strict);
    let kept = Journal::open(dir.path(), true).expect("accept_broken always opens");
    let count = kept.records.len();
    drop(kept);
    let again = Journal::open(dir.path(), false).expect("what was kept replays");
    assert_eq!(again.records.len(), count);
});
