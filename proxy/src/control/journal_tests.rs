use super::*;
use crate::control::record::{ChangeKind, Origin, PlannedRevision};
use crate::routing::ServiceState;
use std::collections::BTreeMap;
use std::time::SystemTime;

fn record(revision: u64, canary: u64) -> RevisionRecord {
    let state = ServiceState {
        stable: "blue".into(),
        weights: BTreeMap::from([("blue".into(), 100 - canary), ("canary".into(), canary)]),
        latched: false,
        frozen: false,
        ..ServiceState::default()
    };
    PlannedRevision {
        service: "shop".into(),
        kind: ChangeKind::Weights,
        old: None,
        new: Some(state),
        declared: None,
        origin: Origin::new("alice", format!("step {revision}")),
    }
    .into_record(revision, None, SystemTime::now())
}

async fn write(dir: &Path, revisions: std::ops::RangeInclusive<u64>) {
    let opened = Journal::open(dir, false).unwrap();
    let records = revisions.map(|r| record(r, r)).collect();
    opened.journal.append(records).await.unwrap();
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(JOURNAL_FILE))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn appends_chain_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=3).await;
    write(dir.path(), 4..=4).await;
    let opened = Journal::open(dir.path(), false).unwrap();
    let revisions: Vec<u64> = opened.records.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, [1, 2, 3, 4]);
    assert_eq!(opened.records[0].prev, GENESIS);
    assert_eq!(opened.records[3].prev, opened.records[2].hash);
    assert_eq!(opened.records[3].reason, "step 4");
    assert_eq!(verify_file(&dir.path().join(JOURNAL_FILE)).unwrap(), 4);
}

#[tokio::test]
async fn drops_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=2).await;
    let path = dir.path().join(JOURNAL_FILE);
    let good_len = std::fs::metadata(&path).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"revision\":3,\"time\":\"20").unwrap();
    drop(file);
    let opened = Journal::open(dir.path(), false).unwrap();
    assert_eq!(opened.torn_bytes, Some(24));
    assert_eq!(opened.records.len(), 2);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    // The chain goes on from the last good line.
    opened.journal.append(vec![record(3, 3)]).await.unwrap();
    drop(opened);
    assert_eq!(verify_file(&path).unwrap(), 3);
}

#[tokio::test]
async fn refuses_an_edited_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=3).await;
    let mut text = lines(dir.path());
    text[1] = text[1].replace("\"canary\":2", "\"canary\":50");
    std::fs::write(dir.path().join(JOURNAL_FILE), text.join("\n") + "\n").unwrap();
    let err = Journal::open(dir.path(), false).err().unwrap();
    let message = err.to_string();
    assert!(message.contains(":2: chain is broken"), "{message}");
    assert!(message.contains("--accept-broken-journal"), "{message}");
}

#[tokio::test]
async fn refuses_a_removed_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=3).await;
    let mut text = lines(dir.path());
    text.remove(1);
    std::fs::write(dir.path().join(JOURNAL_FILE), text.join("\n") + "\n").unwrap();
    let err = Journal::open(dir.path(), false).err().unwrap();
    assert!(err.to_string().contains("does not follow"), "{err}");
}

#[tokio::test]
async fn accepting_a_broken_chain_sets_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=3).await;
    let mut text = lines(dir.path());
    text[0] = text[0].replace("alice", "mallory");
    std::fs::write(dir.path().join(JOURNAL_FILE), text.join("\n") + "\n").unwrap();
    let opened = Journal::open(dir.path(), true).unwrap();
    let broken = opened.broken.clone().unwrap();
    assert_eq!(broken.line, 1);
    assert!(broken.kept_as.exists());
    assert_eq!(opened.records.len(), 3, "lines that parse are kept");
    assert_eq!(
        std::fs::metadata(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .len(),
        0
    );
    opened.journal.append(vec![record(4, 4)]).await.unwrap();
    drop(opened);
    assert_eq!(verify_file(&dir.path().join(JOURNAL_FILE)).unwrap(), 1);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_journal() {
    let dir = tempfile::tempdir().unwrap();
    let first = Journal::open(dir.path(), false).unwrap();
    let err = Journal::open(dir.path(), false).err().unwrap();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    drop(first);
    assert!(Journal::open(dir.path(), false).is_ok());
}
