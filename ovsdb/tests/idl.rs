//! The client IDL against our oxvsdb-server and the real ovsdb-server
//! (Debian's openvswitch packages, installed by `cargo xtask setup`), with
//! real ovs-vsctl as the "other client".
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use oxvs_ovsdb::{
    Atom, Datum,
    idl::{ChangeKind, Idl, IdlError, IdlOptions, TableSelect, TxnStatus},
};
use serde_json::json;
use uuid::Uuid;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn need(tool: &str) {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "{tool} is missing: run `cargo xtask setup` (Debian's openvswitch-switch/openvswitch-common)");
}

/// A server (ours or OVS's) on a fresh database in its own directory.
struct Server {
    real: bool,
    /// An extra `ptcp:` remote on 127.0.0.1, if asked for.
    tcp_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
    sock: PathBuf,
}

impl Server {
    fn start(real: bool, tag: &str) -> Server {
        Self::start_with(real, tag, None)
    }

    fn start_with(real: bool, tag: &str, tcp_port: Option<u16>) -> Server {
        need("ovsdb-tool");
        need("ovs-vsctl");
        let dir = std::env::temp_dir().join(format!(
            "oxvs-idl-{tag}-{}-{}",
            if real { "ovs" } else { "ox" },
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("ovsdb-tool").arg("create").arg(dir.join("conf.db")).arg(SCHEMA).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sock = dir.join("db.sock");
        let mut s = Server { real, tcp_port, dir, child: None, sock };
        s.spawn();
        let o = s.vsctl(&["init"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        s
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let bin =
            if self.real { PathBuf::from("ovsdb-server") } else { PathBuf::from(env!("CARGO_BIN_EXE_oxvsdb-server")) };
        let child = Command::new(bin)
            .arg(self.dir.join("conf.db"))
            .arg(format!("--remote=punix:{}", self.sock.display()))
            .args(self.tcp_port.map(|p| format!("--remote=ptcp:{p}:127.0.0.1")))
            .arg(format!("--unixctl={}", self.dir.join("ctl").display()))
            .arg("--no-chdir")
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_LOGDIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while !self.sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "server did not create {}", self.sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn db(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    fn vsctl(&self, args: &[&str]) -> Output {
        Command::new("ovs-vsctl")
            .arg("--no-wait")
            .arg(format!("--db={}", self.db()))
            .arg("--timeout=10")
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .output()
            .unwrap()
    }

    fn vsctl_ok(&self, args: &[&str]) -> String {
        let o = self.vsctl(args);
        assert!(o.status.success(), "ovs-vsctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn opts() -> IdlOptions {
    IdlOptions { reconnect: false, ..IdlOptions::default() }
}

fn s(v: &str) -> Datum {
    Datum::scalar(Atom::string(v))
}

fn bridge_names(idl: &Idl) -> Vec<String> {
    let mut v: Vec<String> = idl
        .replica()
        .table("Bridge")
        .unwrap()
        .rows
        .values()
        .map(|r| r.get("name").unwrap().keys[0].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn ovs_row(idl: &Idl) -> Uuid {
    let t = idl.replica().table("Open_vSwitch").unwrap();
    assert_eq!(t.rows.len(), 1);
    *t.rows.keys().next().unwrap()
}

async fn wait_until(idl: &mut Idl, what: &str, cond: impl Fn(&Idl) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond(idl) {
        match tokio::time::timeout_at(deadline, idl.wait_for_update()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(r) => r.unwrap(),
        }
    }
}

/// The replica holds exactly what a `select` of every table returns.
async fn initial_replica_matches(real: bool) {
    let srv = Server::start(real, "initial");
    srv.vsctl_ok(&["add-br", "br0", "--", "set", "Bridge", "br0", "external_ids:k=v", "stp_enable=true"]);
    let mut idl = Idl::connect(&srv.db(), opts()).await.unwrap();
    assert!(idl.is_connected());
    assert_eq!(bridge_names(&idl), ["br0"]);
    let tables: Vec<String> = idl.schema().tables.keys().cloned().collect();
    assert_eq!(idl.replica().table_names().count(), tables.len());
    for t in &tables {
        let r = idl
            .request("transact", vec![json!("Open_vSwitch"), json!({"op": "select", "table": t, "where": []})])
            .await;
        let rows = r.unwrap()[0]["rows"].as_array().unwrap().clone();
        let rep = idl.replica().table(t).unwrap();
        assert_eq!(rows.len(), rep.rows.len(), "table {t}");
        let ts = idl.schema().tables[t].clone();
        for row in rows {
            let uuid = oxvs_ovsdb::atom::uuid_from_json(&row["_uuid"], None).unwrap();
            let mine = rep.rows.get(&uuid).unwrap_or_else(|| panic!("{t} row {uuid} missing"));
            assert_eq!(mine.columns.len(), ts.columns.len());
            for (c, cs) in &ts.columns {
                let want = Datum::from_json(&cs.type_, &row[c], None).unwrap();
                assert_eq!(mine.get(c), Some(&want), "{t}.{c}");
            }
        }
    }
    let br = idl.replica().table("Bridge").unwrap().rows.values().next().unwrap();
    assert_eq!(br.get("stp_enable"), Some(&Datum::scalar(Atom::Boolean(true))));
    // Initial rows are reported as inserts.
    let ch = idl.take_changes();
    assert!(ch.iter().any(|c| c.table == "Bridge" && c.kind == ChangeKind::Insert));
    assert!(idl.take_changes().is_empty());
}

#[tokio::test]
async fn initial_replica_ours() {
    initial_replica_matches(false).await
}
#[tokio::test]
async fn initial_replica_real() {
    initial_replica_matches(true).await
}

/// Another client's changes show up as updates with change tracking.
async fn others_changes(real: bool) {
    let srv = Server::start(real, "others");
    let mut idl = Idl::connect(&srv.db(), opts()).await.unwrap();
    idl.take_changes();
    let seq = idl.seqno();
    srv.vsctl_ok(&["add-br", "br1"]);
    wait_until(&mut idl, "br1", |i| bridge_names(i) == ["br1"]).await;
    assert!(idl.seqno() > seq);
    let ch = idl.take_changes();
    let br = ch.iter().find(|c| c.table == "Bridge").expect("a Bridge change");
    assert_eq!(br.kind, ChangeKind::Insert);
    let ovs = ch.iter().find(|c| c.table == "Open_vSwitch").expect("an Open_vSwitch change");
    let ChangeKind::Modify { old } = &ovs.kind else { panic!("{ovs:?}") };
    assert_eq!(old.get("bridges"), Some(&Datum::empty_set()), "old value of the changed column");

    srv.vsctl_ok(&["set", "Bridge", "br1", "other_config:a=b"]);
    wait_until(&mut idl, "other_config", |i| {
        let r = i.replica().table("Bridge").unwrap().rows.values().next().unwrap();
        !r.get("other_config").unwrap().is_empty()
    })
    .await;
    let ch = idl.take_changes();
    assert!(matches!(&ch[..], [c] if matches!(&c.kind, ChangeKind::Modify { old } if old.keys().eq(["other_config"]))));

    srv.vsctl_ok(&["del-br", "br1"]);
    wait_until(&mut idl, "no bridges", |i| bridge_names(i).is_empty()).await;
    let ch = idl.take_changes();
    assert!(
        ch.iter().any(|c| c.table == "Bridge"
            && matches!(&c.kind, ChangeKind::Delete { old } if old.get("name") == Some(&s("br1"))))
    );
}

#[tokio::test]
async fn others_changes_ours() {
    others_changes(false).await
}
#[tokio::test]
async fn others_changes_real() {
    others_changes(true).await
}

/// Insert with references, verify, increment, unchanged, dry run, errors.
async fn transactions(real: bool) {
    let srv = Server::start(real, "txn");
    let mut idl = Idl::connect(&srv.db(), opts()).await.unwrap();
    let ovs = ovs_row(&idl);

    // A Bridge with a Port and an Interface, referenced from Open_vSwitch.
    let mut txn = idl.txn();
    // Touched first, so its update goes out before the inserts it refers to
    // (a forward named-uuid reference, which OVS's IDL also produces).
    txn.verify(idl.replica(), "Open_vSwitch", &ovs, "bridges");
    let iface = txn.insert("Interface");
    txn.write("Interface", &iface, "name", s("br2"));
    txn.write("Interface", &iface, "type", s("internal"));
    let port = txn.insert("Port");
    txn.write("Port", &port, "name", s("br2"));
    txn.write("Port", &port, "interfaces", Datum::scalar(Atom::Uuid(iface)));
    let br = txn.insert("Bridge");
    txn.write("Bridge", &br, "name", s("br2"));
    txn.write("Bridge", &br, "ports", Datum::scalar(Atom::Uuid(port)));
    let mut bridges = txn.read(idl.replica(), "Open_vSwitch", &ovs, "bridges").unwrap();
    bridges.keys.push(Atom::Uuid(br));
    txn.write("Open_vSwitch", &ovs, "bridges", bridges);
    assert!(txn.is_inserted(&br));
    assert_eq!(txn.rows(idl.replica(), "Bridge"), vec![br]);
    assert_eq!(txn.read(idl.replica(), "Bridge", &br, "name"), Some(s("br2")));
    assert_eq!(txn.read(idl.replica(), "Bridge", &br, "stp_enable"), Some(Datum::scalar(Atom::Boolean(false))));
    txn.comment("idl test");
    let out = idl.commit(txn).await.unwrap();
    assert_eq!(out.status, TxnStatus::Success);
    assert_eq!(out.inserted.len(), 3);
    let real_br = out.inserted[&br];
    assert_ne!(real_br, br);
    // The replica already shows our own write.
    assert_eq!(idl.replica().row("Bridge", &real_br).unwrap().get("name"), Some(&s("br2")));
    let bridges = idl.replica().row("Open_vSwitch", &ovs).unwrap().get("bridges").unwrap().clone();
    assert_eq!(bridges.keys, vec![Atom::Uuid(real_br)]);
    assert_eq!(srv.vsctl_ok(&["list-br"]), "br2\n");
    assert_eq!(srv.vsctl_ok(&["list-ports", "br2"]), "");
    assert_eq!(srv.vsctl_ok(&["get", "Interface", "br2", "type"]), "internal\n");

    // Writing the value a column already has changes nothing.
    let mut txn = idl.txn();
    txn.write("Bridge", &real_br, "name", s("br2"));
    assert!(!txn.is_empty());
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::Unchanged);
    assert_eq!(idl.commit(idl.txn()).await.unwrap().status, TxnStatus::Unchanged);

    // verify: another client changes the column between read and commit.
    let mut txn = idl.txn();
    txn.verify(idl.replica(), "Open_vSwitch", &ovs, "bridges");
    txn.write(
        "Bridge",
        &real_br,
        "external_ids",
        Datum { keys: vec![Atom::string("x")], values: Some(vec![Atom::string("1")]) },
    );
    srv.vsctl_ok(&["add-br", "br3"]);
    let out = idl.commit(txn).await.unwrap();
    assert_eq!(out.status, TxnStatus::TryAgain);
    assert_eq!(srv.vsctl_ok(&["get", "Bridge", "br2", "external_ids"]), "{}\n");
    // Once the replica has caught up, the same transaction goes through.
    wait_until(&mut idl, "br3", |i| bridge_names(i).len() == 2).await;
    let mut txn = idl.txn();
    txn.verify(idl.replica(), "Open_vSwitch", &ovs, "bridges");
    txn.write(
        "Bridge",
        &real_br,
        "external_ids",
        Datum { keys: vec![Atom::string("x")], values: Some(vec![Atom::string("1")]) },
    );
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::Success);
    assert_eq!(srv.vsctl_ok(&["get", "Bridge", "br2", "external_ids:x"]), "\"1\"\n");

    // increment: with another change, the next value comes back.
    let next = |idl: &Idl| {
        idl.replica().row("Open_vSwitch", &ovs).unwrap().get("next_cfg").unwrap().keys[0].as_integer().unwrap()
    };
    let before = next(&idl);
    let mut txn = idl.txn();
    txn.write("Bridge", &real_br, "stp_enable", Datum::scalar(Atom::Boolean(true)));
    txn.increment("Open_vSwitch", &ovs, "next_cfg");
    let out = idl.commit(txn).await.unwrap();
    assert_eq!(out.status, TxnStatus::Success);
    assert_eq!(out.increment_new_value, Some(before + 1));
    // Alone, it is only sent when forced.
    let mut txn = idl.txn();
    txn.increment("Open_vSwitch", &ovs, "next_cfg");
    assert_eq!(idl.commit(txn.clone()).await.unwrap().status, TxnStatus::Unchanged);
    txn.set_increment_force(true);
    let out = idl.commit(txn).await.unwrap();
    assert_eq!(out.increment_new_value, Some(before + 2));
    wait_until(&mut idl, "next_cfg", |i| next(i) == before + 2).await;

    // Dry run: checked, reported as success, nothing committed.
    let mut txn = idl.txn();
    let b = txn.insert("Bridge");
    txn.write("Bridge", &b, "name", s("dry"));
    txn.set_dry_run(true);
    let out = idl.commit(txn).await.unwrap();
    assert_eq!(out.status, TxnStatus::Success);
    assert_eq!(srv.vsctl_ok(&["list-br"]), "br2\nbr3\n");

    // A constraint violation: two bridges with the same name.
    let mut txn = idl.txn();
    let b = txn.insert("Bridge");
    txn.write("Bridge", &b, "name", s("br2"));
    let mut bridges = txn.read(idl.replica(), "Open_vSwitch", &ovs, "bridges").unwrap();
    bridges.keys.push(Atom::Uuid(b));
    bridges.keys.sort();
    txn.write("Open_vSwitch", &ovs, "bridges", bridges);
    let out = idl.commit(txn).await.unwrap();
    let TxnStatus::Error(e) = &out.status else { panic!("{out:?}") };
    assert!(e.contains("\"error\":\"constraint violation\""), "{e}");
    assert!(e.starts_with("{\"details\":"), "members sorted as OVS prints them: {e}");

    // Deleting: the bridge goes, and with it (garbage collected) its port.
    let mut txn = idl.txn();
    let mut bridges = txn.read(idl.replica(), "Open_vSwitch", &ovs, "bridges").unwrap();
    bridges.keys.retain(|a| *a != Atom::Uuid(real_br));
    txn.write("Open_vSwitch", &ovs, "bridges", bridges);
    txn.delete("Bridge", &real_br);
    assert_eq!(txn.read(idl.replica(), "Bridge", &real_br, "name"), None);
    assert!(!txn.rows(idl.replica(), "Bridge").contains(&real_br));
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::Success);
    assert!(idl.replica().row("Bridge", &real_br).is_none());
    assert_eq!(srv.vsctl_ok(&["list-br"]), "br3\n");

    // Misuse is an error, not a panic.
    let mut txn = idl.txn();
    txn.write("Bridge", &real_br, "no_such_column", s("x"));
    assert!(matches!(idl.commit(txn).await, Err(IdlError::Txn(_))));
    // Raw requests report JSON-RPC errors.
    assert!(matches!(idl.request("no_such_method", vec![]).await, Err(IdlError::Rpc(_))));
}

#[tokio::test]
async fn transactions_ours() {
    transactions(false).await
}
#[tokio::test]
async fn transactions_real() {
    transactions(true).await
}

fn row_named(idl: &Idl, table: &str, name: &str) -> Uuid {
    let t = idl.replica().table(table).unwrap();
    *t.rows.iter().find(|(_, r)| r.get("name") == Some(&s(name))).unwrap_or_else(|| panic!("no {table} {name}")).0
}

fn ints(v: &[i64]) -> Datum {
    Datum { keys: v.iter().map(|i| Atom::Integer(*i)).collect(), values: None }
}

fn smap(pairs: &[(&str, &str)]) -> Datum {
    Datum {
        keys: pairs.iter().map(|p| Atom::string(p.0)).collect(),
        values: Some(pairs.iter().map(|p| Atom::string(p.1)).collect()),
    }
}

/// Partial set and map updates: mutate operations that merge with what
/// other clients did, where whole-column writes with verify conflict.
async fn partial_updates(real: bool) {
    let srv = Server::start(real, "partial");
    srv.vsctl_ok(&["add-br", "br0", "--", "set", "Bridge", "br0", "flood_vlans=1", "other_config:k=v1"]);
    let mut a = Idl::connect(&srv.db(), opts()).await.unwrap();
    let mut b = Idl::connect(&srv.db(), opts()).await.unwrap();
    let br = row_named(&a, "Bridge", "br0");

    // Two clients add to the same set from the same starting point: both
    // land, although b's replica has not seen a's change.
    let mut ta = a.txn();
    ta.write_partial_set("Bridge", &br, "flood_vlans", &ints(&[2]));
    let mut tb = b.txn();
    tb.write_partial_set("Bridge", &br, "flood_vlans", &ints(&[3, 4]));
    assert_eq!(a.commit(ta).await.unwrap().status, TxnStatus::Success);
    assert_eq!(b.commit(tb).await.unwrap().status, TxnStatus::Success);
    assert_eq!(srv.vsctl_ok(&["get", "Bridge", "br0", "flood_vlans"]), "[1, 2, 3, 4]\n");
    // The same with whole-column writes and verify, both built from the same
    // up-to-date view: the one committed second must retry.
    wait_until(&mut a, "a sees 4 vlans", |i| {
        i.replica().row("Bridge", &br).unwrap().get("flood_vlans").unwrap().len() == 4
    })
    .await;
    let mut ta = a.txn();
    ta.verify(a.replica(), "Bridge", &br, "flood_vlans");
    ta.write("Bridge", &br, "flood_vlans", ints(&[1, 2, 3, 4, 5]));
    let mut tb = a.txn();
    tb.verify(a.replica(), "Bridge", &br, "flood_vlans");
    tb.write("Bridge", &br, "flood_vlans", ints(&[1, 2, 3, 4, 6]));
    assert_eq!(a.commit(ta).await.unwrap().status, TxnStatus::Success);
    assert_eq!(b.commit(tb).await.unwrap().status, TxnStatus::TryAgain);

    // Removing members, some of which are not there.
    wait_until(&mut b, "b sees 5 vlans", |i| {
        i.replica().row("Bridge", &br).unwrap().get("flood_vlans").unwrap().len() == 5
    })
    .await;
    let mut tb = b.txn();
    tb.delete_partial_set("Bridge", &br, "flood_vlans", &ints(&[1, 5, 9]));
    assert_eq!(b.commit(tb).await.unwrap().status, TxnStatus::Success);
    assert_eq!(srv.vsctl_ok(&["get", "Bridge", "br0", "flood_vlans"]), "[2, 3, 4]\n");

    // Maps: an existing key gets the new value, new keys are added, deleted
    // keys go whatever their value.
    wait_until(&mut a, "a sees 3 vlans", |i| {
        i.replica().row("Bridge", &br).unwrap().get("flood_vlans").unwrap().len() == 3
    })
    .await;
    let mut ta = a.txn();
    ta.write_partial_map(a.replica(), "Bridge", &br, "other_config", &smap(&[("k", "v2"), ("n", "1")]));
    assert_eq!(a.commit(ta).await.unwrap().status, TxnStatus::Success);
    assert_eq!(srv.vsctl_ok(&["get", "Bridge", "br0", "other_config"]), "{k=v2, n=\"1\"}\n");
    let mut ta = a.txn();
    ta.delete_partial_map("Bridge", &br, "other_config", &smap(&[("k", "ignored")]));
    ta.write_partial_map(a.replica(), "Bridge", &br, "other_config", &smap(&[("n", "1")])); // unchanged
    assert_eq!(a.commit(ta).await.unwrap().status, TxnStatus::Success);
    assert_eq!(srv.vsctl_ok(&["get", "Bridge", "br0", "other_config"]), "{n=\"1\"}\n");
    // Nothing that would change the value: nothing is sent.
    let mut ta = a.txn();
    ta.write_partial_map(a.replica(), "Bridge", &br, "other_config", &smap(&[("n", "1")]));
    ta.delete_partial_map("Bridge", &br, "other_config", &smap(&[("k", "")]));
    assert_eq!(a.commit(ta).await.unwrap().status, TxnStatus::Unchanged);

    // The server checks the merged value: one tag too many is its
    // constraint violation, in OVS's words on both servers.
    srv.vsctl_ok(&["set", "Port", "br0", "tag=1"]);
    let port = row_named(&a, "Port", "br0");
    wait_until(&mut a, "a sees the tag", |i| !i.replica().row("Port", &port).unwrap().get("tag").unwrap().is_empty())
        .await;
    let mut ta = a.txn();
    ta.write_partial_set("Port", &port, "tag", &ints(&[2]));
    assert_eq!(
        a.commit(ta).await.unwrap().status,
        TxnStatus::Error(
            r#"{"details":"Attempted to store 2 elements in set of up to 1 integers.","error":"constraint violation"}"#
                .into()
        )
    );
    assert_eq!(srv.vsctl_ok(&["get", "Port", "br0", "tag"]), "1\n");
}

#[tokio::test]
async fn partial_updates_ours() {
    partial_updates(false).await
}
#[tokio::test]
async fn partial_updates_real() {
    partial_updates(true).await
}

/// The server goes away and comes back: the replica is rebuilt.
async fn reconnects(real: bool) {
    let mut srv = Server::start(real, "reconnect");
    srv.vsctl_ok(&["add-br", "br0"]);
    let o = IdlOptions { reconnect: true, max_backoff: Duration::from_secs(2), ..IdlOptions::default() };
    let mut idl = Idl::connect(&srv.db(), o).await.unwrap();
    idl.take_changes();
    let seq = idl.seqno();
    srv.kill();
    // Noticed as a disconnection; then, with the server back, a rebuild.
    let t = Instant::now();
    while idl.is_connected() {
        assert!(t.elapsed() < Duration::from_secs(10));
        let _ = tokio::time::timeout(Duration::from_millis(100), idl.wait_for_update()).await;
    }
    // A transaction while disconnected must be retried.
    let mut txn = idl.txn();
    let b = txn.insert("Bridge");
    txn.write("Bridge", &b, "name", s("x"));
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::TryAgain);
    srv.spawn();
    srv.vsctl_ok(&["add-br", "br9"]);
    wait_until(&mut idl, "reconnect", |i| i.is_connected()).await;
    assert!(idl.seqno() > seq);
    wait_until(&mut idl, "br9", |i| bridge_names(i) == ["br0", "br9"]).await;
    let ch = idl.take_changes();
    assert!(ch.iter().any(|c| c.table == "Bridge" && c.kind == ChangeKind::Insert), "{ch:?}");
    assert!(!ch.iter().any(|c| c.table == "Bridge" && matches!(c.kind, ChangeKind::Delete { .. })), "{ch:?}");
    // And the new session works.
    let ovs = ovs_row(&idl);
    let mut txn = idl.txn();
    txn.write(
        "Open_vSwitch",
        &ovs,
        "external_ids",
        Datum { keys: vec![Atom::string("k")], values: Some(vec![Atom::string("v")]) },
    );
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::Success);
}

#[tokio::test]
async fn reconnects_ours() {
    reconnects(false).await
}
#[tokio::test]
async fn reconnects_real() {
    reconnects(true).await
}

/// Only the selected tables and columns are replicated.
async fn selection(real: bool) {
    let srv = Server::start(real, "select");
    srv.vsctl_ok(&["add-br", "br0", "--", "set", "Bridge", "br0", "external_ids:a=b"]);
    let o = IdlOptions {
        tables: vec![TableSelect::columns("Bridge", &["name"]), TableSelect::all("Open_vSwitch")],
        ..opts()
    };
    let mut idl = Idl::connect(&srv.db(), o).await.unwrap();
    assert_eq!(idl.replica().table_names().collect::<Vec<_>>(), ["Bridge", "Open_vSwitch"]);
    let row = idl.replica().table("Bridge").unwrap().rows.values().next().unwrap();
    assert_eq!(row.columns.keys().collect::<Vec<_>>(), ["name"]);
    assert!(idl.replica().table("Port").is_none());
    // A change to an unmonitored column brings no update.
    idl.take_changes();
    srv.vsctl_ok(&["set", "Bridge", "br0", "external_ids:a=c"]);
    srv.vsctl_ok(&["add-br", "br1"]);
    wait_until(&mut idl, "br1", |i| bridge_names(i).len() == 2).await;
    let ch = idl.take_changes();
    assert!(!ch.iter().any(|c| matches!(&c.kind, ChangeKind::Modify { old } if old.contains_key("external_ids"))));

    let bad = IdlOptions { tables: vec![TableSelect::all("Nope")], ..opts() };
    assert!(matches!(Idl::connect(&srv.db(), bad).await, Err(IdlError::Schema(_))));
    let bad = IdlOptions { tables: vec![TableSelect::columns("Bridge", &["nope"])], ..opts() };
    assert!(matches!(Idl::connect(&srv.db(), bad).await, Err(IdlError::Schema(_))));
    let bad = IdlOptions { database: "Nope".into(), ..opts() };
    assert!(Idl::connect(&srv.db(), bad).await.is_err());
}

#[tokio::test]
async fn selection_ours() {
    selection(false).await
}
#[tokio::test]
async fn selection_real() {
    selection(true).await
}

#[tokio::test]
async fn no_server_fails_quickly() {
    let path = std::env::temp_dir().join(format!("oxvs-idl-none-{}.sock", std::process::id()));
    let t = Instant::now();
    let e = Idl::connect(&format!("unix:{}", path.display()), opts()).await.err().expect("no server");
    assert_eq!(e, IdlError::Connect("No such file or directory".into()));
    assert_eq!(e.to_string(), "database connection failed (No such file or directory)");
    assert!(t.elapsed() < Duration::from_secs(2));
    let e = Idl::connect("tcp:127.0.0.1:1", opts()).await.err().expect("no server");
    assert_eq!(e, IdlError::Connect("Connection refused".into()));
    assert!(matches!(Idl::connect("ssl:1.2.3.4:5", opts()).await, Err(IdlError::Connect(_))));
}

/// Typed Open_vSwitch access over values a real client wrote: every getter of
/// every row round-trips, and setters write what ovs-vsctl then reads.
async fn vswitch_typed(real: bool) {
    use oxvs_ovsdb::vswitch::{self, Bridge, Controller, Interface, OpenVSwitch, Port};
    let srv = Server::start(real, "vswitch");
    srv.vsctl_ok(&[
        "add-br",
        "br0",
        "--",
        "set",
        "Bridge",
        "br0",
        "fail_mode=secure",
        "other_config:hwaddr=\"00:11:22:33:44:55\"",
        "protocols=OpenFlow10,OpenFlow13",
        "--",
        "add-port",
        "br0",
        "p1",
        "tag=10",
        "trunks=1,2,3",
        "--",
        "set",
        "Interface",
        "p1",
        "type=internal",
        "ofport_request=5",
        "options:key=flow",
        "--",
        "set-controller",
        "br0",
        "tcp:127.0.0.1:6653",
        "--",
        "set",
        "Open_vSwitch",
        ".",
        "external_ids:system-id=abc",
    ]);
    let mut idl = Idl::connect(&srv.db(), opts()).await.unwrap();
    let rep = idl.replica();
    let mut checked = 0;
    for t in vswitch::TABLES {
        for (uuid, row) in &rep.table(t).unwrap().rows {
            for (c, d) in vswitch::typed_datums(rep, t, uuid).unwrap() {
                assert_eq!(Some(&d), row.get(c), "{t}.{c}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked} values checked");
    let br = Bridge::by_name(rep, "br0").unwrap();
    assert_eq!(br.fail_mode(), Some("secure".to_string()));
    assert_eq!(br.protocols(), ["OpenFlow10", "OpenFlow13"]);
    assert_eq!(br.other_config().get("hwaddr").map(String::as_str), Some("00:11:22:33:44:55"));
    assert_eq!(br.ports().len(), 2);
    let p1 = Port::by_name(rep, "p1").unwrap();
    assert!(br.ports().contains(&p1.uuid()));
    assert_eq!(p1.tag(), Some(10));
    assert_eq!(p1.trunks(), [1, 2, 3]);
    let i1 = Interface::get(rep, &p1.interfaces()[0]).unwrap();
    assert_eq!((i1.name(), i1.type_(), i1.ofport_request()), ("p1".to_string(), "internal".to_string(), Some(5)));
    assert_eq!(i1.options().get("key").map(String::as_str), Some("flow"));
    let ctl = Controller::get(rep, &br.controller()[0]).unwrap();
    assert_eq!(ctl.target(), "tcp:127.0.0.1:6653");
    assert!(!ctl.is_connected());
    let ovs = OpenVSwitch::first(rep).unwrap();
    assert_eq!(ovs.bridges(), [br.uuid()]);
    assert_eq!(ovs.external_ids()["system-id"], "abc");

    // Setters.
    let (br_uuid, i1_uuid, p1_uuid) = (br.uuid(), i1.uuid(), p1.uuid());
    let mut txn = idl.txn();
    Bridge::set_stp_enable(&mut txn, &br_uuid, true);
    Bridge::set_fail_mode(&mut txn, &br_uuid, None);
    Bridge::set_external_ids(&mut txn, &br_uuid, [("a".to_string(), "1".to_string())].into());
    Port::set_trunks(&mut txn, &p1_uuid, vec![7, 5]);
    Port::set_tag(&mut txn, &p1_uuid, None);
    Interface::set_mtu_request(&mut txn, &i1_uuid, Some(1400));
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::Success);
    assert_eq!(
        srv.vsctl_ok(&["get", "Bridge", "br0", "stp_enable", "fail_mode", "external_ids"]),
        "true\n[]\n{a=\"1\"}\n"
    );
    assert_eq!(srv.vsctl_ok(&["get", "Port", "p1", "trunks", "tag"]), "[5, 7]\n[]\n");
    assert_eq!(srv.vsctl_ok(&["get", "Interface", "p1", "mtu_request"]), "1400\n");
    let rep = idl.replica();
    assert_eq!(Port::get(rep, &p1_uuid).unwrap().trunks(), [5, 7]);
    assert!(Bridge::get(rep, &br_uuid).unwrap().stp_enable());
}

#[tokio::test]
async fn vswitch_typed_ours() {
    vswitch_typed(false).await
}
#[tokio::test]
async fn vswitch_typed_real() {
    vswitch_typed(true).await
}

/// The same over TCP.
async fn tcp_remote(real: bool) {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let srv = Server::start_with(real, "tcp", Some(port));
    let remote = format!("tcp:127.0.0.1:{port}");
    let t = Instant::now();
    let mut idl = loop {
        match Idl::connect(&remote, opts()).await {
            Ok(idl) => break idl,
            // The server may still be setting up its TCP listener.
            Err(e) if t.elapsed() < Duration::from_secs(10) => {
                eprintln!("{e}");
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{remote}: {e}"),
        }
    };
    let ovs = ovs_row(&idl);
    let mut txn = idl.txn();
    let b = txn.insert("Bridge");
    txn.write("Bridge", &b, "name", s("brt"));
    let mut bridges = txn.read(idl.replica(), "Open_vSwitch", &ovs, "bridges").unwrap();
    bridges.keys.push(Atom::Uuid(b));
    txn.write("Open_vSwitch", &ovs, "bridges", bridges);
    assert_eq!(idl.commit(txn).await.unwrap().status, TxnStatus::Success);
    assert_eq!(bridge_names(&idl), ["brt"]);
    assert_eq!(srv.vsctl_ok(&["list-br"]), "brt\n");
}

#[tokio::test]
async fn tcp_remote_ours() {
    tcp_remote(false).await
}
#[tokio::test]
async fn tcp_remote_real() {
    tcp_remote(true).await
}

/// The real ovsdb-server removes the database (the IDL is told with
/// monitor_canceled, having asked with set_db_change_aware) and adds it back:
/// the IDL keeps retrying and rebuilds its replica. Our server has no
/// remove-db/add-db.
#[tokio::test]
async fn database_removed_and_added_real() {
    let srv = Server::start(true, "removedb");
    srv.vsctl_ok(&["add-br", "br0"]);
    let o = IdlOptions { reconnect: true, max_backoff: Duration::from_secs(1), ..IdlOptions::default() };
    let mut idl = Idl::connect(&srv.db(), o).await.unwrap();
    let appctl = |args: &[&str]| {
        let o = Command::new("ovs-appctl").arg("-t").arg(srv.dir.join("ctl")).args(args).output().unwrap();
        assert!(o.status.success(), "ovs-appctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    appctl(&["ovsdb-server/remove-db", "Open_vSwitch"]);
    let t = Instant::now();
    while idl.is_connected() {
        assert!(t.elapsed() < Duration::from_secs(10), "monitor_canceled not noticed");
        let _ = tokio::time::timeout(Duration::from_millis(100), idl.wait_for_update()).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    appctl(&["ovsdb-server/add-db", srv.dir.join("conf.db").to_str().unwrap()]);
    wait_until(&mut idl, "reconnect", |i| i.is_connected()).await;
    assert_eq!(bridge_names(&idl), ["br0"]);
}
