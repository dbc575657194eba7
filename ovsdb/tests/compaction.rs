//! Online compaction through the server core: the snapshot is written on
//! another thread while transactions keep committing to the old log, and
//! none of them is lost when the new file takes over.

use std::path::PathBuf;

use oxvs_ovsdb::{
    jsonrpc::Message,
    log::{Log, OpenMode},
    server::{Core, Outgoing},
};
use serde_json::{Value, json};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("oxvs-compaction-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SCHEMA: &str = r#"{"name": "Big", "version": "1.0.0",
  "tables": {"Blob": {"columns": {"n": {"type": "integer"}, "data": {"type": "string"}}}}}"#;

/// A new database file holding just the schema.
fn create_db(dir: &TempDir) -> PathBuf {
    let file = dir.0.join("big.db");
    let (mut log, _) = Log::open(&file, OpenMode::CreateExcl).unwrap();
    log.append(&serde_json::from_str(SCHEMA).unwrap()).unwrap();
    log.commit().unwrap();
    file
}

fn insert(core: &mut Core, id: u64, n: i64, size: usize) {
    let op = json!({"op": "insert", "table": "Blob", "row": {"n": n, "data": "x".repeat(size)}});
    core.handle(1, Message::request("transact", vec![json!("Big"), op], json!(id)));
    core.sync().unwrap();
}

fn replies(core: &mut Core) -> Vec<Value> {
    core.take_outbox()
        .into_iter()
        .map(|(_, m)| {
            // Transaction replies come already serialized.
            let m = match m {
                Outgoing::Message(m) => m,
                Outgoing::Text(t) => Message::from_json(serde_json::from_slice(&t).expect("reply is JSON")).unwrap(),
            };
            match m {
                Message::Response { result, .. } => result,
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

fn count_rows(core: &mut Core) -> usize {
    let op = json!({"op": "select", "table": "Blob", "where": [], "columns": ["n"]});
    core.handle(1, Message::request("transact", vec![json!("Big"), op], json!("count")));
    let r = replies(core);
    r[0][0]["rows"].as_array().unwrap().len()
}

#[test]
fn online_compaction_keeps_commits_made_while_writing() {
    let dir = TempDir::new("online");
    let file = create_db(&dir);

    let mut core = Core::open(std::slice::from_ref(&file)).unwrap();
    core.add_session(1);
    // Over 10 MiB and 100 records: what OVS calls a log that grew lots.
    for i in 0..120 {
        insert(&mut core, i, i as i64, 100_000);
    }
    assert!(replies(&mut core).iter().all(|r| r[0]["uuid"].is_array()));
    let before = std::fs::metadata(&file).unwrap().len();

    let jobs = core.start_compactions();
    assert_eq!(jobs.len(), 1);
    assert!(core.start_compactions().is_empty(), "a second compaction started while one runs");
    let worker = std::thread::spawn(move || jobs.into_iter().map(|j| j.run()).collect::<Vec<_>>());
    // Commits while the snapshot is being written go to the old log.
    for i in 0..5 {
        insert(&mut core, 1000 + i, 1000 + i as i64, 10);
    }
    assert!(replies(&mut core).iter().all(|r| r[0]["uuid"].is_array()));
    for (db, written) in worker.join().unwrap() {
        core.finish_compaction(&db, written).unwrap();
    }
    insert(&mut core, 2000, 2000, 10);
    assert!(replies(&mut core)[0][0]["uuid"].is_array());
    assert_eq!(count_rows(&mut core), 120 + 5 + 1);
    drop(core);

    // Nothing in the compacted file is garbage: 120 rows in one snapshot
    // record, then the six commits.
    let after = std::fs::metadata(&file).unwrap().len();
    assert!(after < before + 1024, "compacted {before} -> {after}");
    let (_log, records) = Log::open(&file, OpenMode::ReadOnly).unwrap();
    assert_eq!(records.len(), 2 + 6);
    assert_eq!(records[1]["_comment"], "compacting database online");
    assert_eq!(records[1]["Blob"].as_object().unwrap().len(), 120);
    drop(_log);

    let mut core = Core::open(&[file]).unwrap();
    core.add_session(1);
    assert_eq!(count_rows(&mut core), 126);
    assert!(core.start_compactions().is_empty());
}

#[test]
fn manual_compaction_names_and_errors() {
    let dir = TempDir::new("manual");
    let file = create_db(&dir);
    let mut core = Core::open(std::slice::from_ref(&file)).unwrap();
    core.add_session(1);
    for i in 0..3 {
        insert(&mut core, i, i as i64, 10);
    }
    replies(&mut core);
    assert_eq!(core.compact(Some("_Server")).unwrap_err(), "cannot compact built-in databases");
    assert_eq!(core.compact(Some("Nope")).unwrap_err(), "no database by that name");
    let jobs = core.start_compactions();
    assert!(jobs.is_empty(), "a 3-record log doesn't need compacting");
    assert_eq!(core.compact(Some("Big")).unwrap(), vec!["Big".to_string()]);
    assert_eq!(core.compact(None).unwrap(), vec!["Big".to_string()]);
    drop(core);
    let (_log, records) = Log::open(&file, OpenMode::ReadOnly).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["Blob"].as_object().unwrap().len(), 3);
}
