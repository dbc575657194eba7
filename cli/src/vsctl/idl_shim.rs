//! A small stand-in for `oxvs_ovsdb::idl` with the same names and
//! signatures (the subset vsctl uses), so that vsctl can be built and tested
//! before the IDL library lands. It is deliberately simple: one connection,
//! no reconnect, `monitor` of every table. When `oxvs_ovsdb::idl` exists,
//! `vsctl/mod.rs` switches its `use` to it and this file goes away.
#![allow(dead_code)] // The parts of the IDL API vsctl does not use yet.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use oxvs_ovsdb::{
    DatabaseSchema, Datum,
    jsonrpc::{Connection, Message},
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use uuid::Uuid;

#[derive(Debug, Clone, Default)]
pub struct IdlOptions {
    pub database: String,
}

#[derive(Debug, Clone)]
pub enum IdlError {
    Connect(String),
    Protocol(String),
    Closed,
}

impl std::fmt::Display for IdlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdlError::Connect(s) => write!(f, "{s}"),
            IdlError::Protocol(s) => write!(f, "protocol error: {s}"),
            IdlError::Closed => write!(f, "connection closed"),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug, Clone)]
pub struct ReplicaRow {
    pub uuid: Uuid,
    pub columns: BTreeMap<String, Datum>,
}

impl ReplicaRow {
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.columns.get(column)
    }
}

#[derive(Debug, Clone, Default)]
pub struct TableReplica {
    pub rows: BTreeMap<Uuid, ReplicaRow>,
}

#[derive(Debug, Clone, Default)]
pub struct Replica {
    tables: BTreeMap<String, TableReplica>,
}

impl Replica {
    pub fn table(&self, name: &str) -> Option<&TableReplica> {
        self.tables.get(name)
    }
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&ReplicaRow> {
        self.tables.get(table)?.rows.get(uuid)
    }
}

pub struct Idl {
    conn: Connection<Box<dyn Stream>>,
    schema: DatabaseSchema,
    replica: Replica,
    seqno: u64,
    next_id: u64,
}

async fn open_stream(remote: &str) -> Result<Box<dyn Stream>, IdlError> {
    let err = |e: std::io::Error| IdlError::Connect(crate::vsctl::errno_text(&e));
    if let Some(path) = remote.strip_prefix("unix:") {
        Ok(Box::new(tokio::net::UnixStream::connect(path).await.map_err(err)?))
    } else if let Some(addr) = remote.strip_prefix("tcp:") {
        Ok(Box::new(tokio::net::TcpStream::connect(addr).await.map_err(err)?))
    } else {
        Err(IdlError::Connect("Address family not supported by protocol".into()))
    }
}

impl Idl {
    pub async fn connect(remote: &str, options: IdlOptions) -> Result<Idl, IdlError> {
        let stream = open_stream(remote).await?;
        let mut idl = Idl {
            conn: Connection::new(stream),
            schema: DatabaseSchema {
                name: String::new(),
                version: String::new(),
                cksum: None,
                tables: BTreeMap::new(),
            },
            replica: Replica::default(),
            seqno: 0,
            next_id: 0,
        };
        let schema = idl.request("get_schema", vec![json!(options.database)]).await?;
        idl.schema = DatabaseSchema::from_json(&schema).map_err(|e| IdlError::Protocol(e.to_string()))?;
        let mut requests = serde_json::Map::new();
        for (name, table) in &idl.schema.tables {
            let cols: Vec<Value> = table.columns.keys().map(|c| json!(c)).collect();
            requests.insert(name.clone(), json!({ "columns": cols }));
        }
        let initial =
            idl.request("monitor", vec![json!(options.database), json!("vsctl"), Value::Object(requests)]).await?;
        idl.apply_update(&initial)?;
        Ok(idl)
    }

    pub fn schema(&self) -> &DatabaseSchema {
        &self.schema
    }
    pub fn replica(&self) -> &Replica {
        &self.replica
    }
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    fn apply_update(&mut self, updates: &Value) -> Result<(), IdlError> {
        let bad = || IdlError::Protocol("bad table-updates".into());
        let tables = updates.as_object().ok_or_else(bad)?;
        for (tname, rows) in tables {
            let Some(ts) = self.schema.tables.get(tname) else { continue };
            let table = self.replica.tables.entry(tname.clone()).or_default();
            for (uuid, change) in rows.as_object().ok_or_else(bad)? {
                let uuid = Uuid::parse_str(uuid).map_err(|_| bad())?;
                match change.get("new").and_then(Value::as_object) {
                    None => {
                        table.rows.remove(&uuid);
                    }
                    Some(new) => {
                        let row = table.rows.entry(uuid).or_insert_with(|| ReplicaRow {
                            uuid,
                            columns: ts
                                .columns
                                .iter()
                                .map(|(n, c)| (n.clone(), Datum::default_for(&c.type_)))
                                .collect(),
                        });
                        for (col, v) in new {
                            if let Some(cs) = ts.columns.get(col) {
                                let d = Datum::from_json_unchecked(&cs.type_, v, None)
                                    .map_err(|e| IdlError::Protocol(e.to_string()))?;
                                row.columns.insert(col.clone(), d);
                            }
                        }
                    }
                }
            }
        }
        self.seqno += 1;
        Ok(())
    }

    /// Handles one incoming message; returns a response to `want_id` if it is one.
    async fn handle(
        &mut self,
        msg: Message,
        want_id: Option<&Value>,
    ) -> Result<Option<Result<Value, Value>>, IdlError> {
        match msg {
            Message::Request { .. } => {
                if let Some(reply) = msg.echo_reply() {
                    self.conn.send(&reply).await.map_err(|e| IdlError::Protocol(e.to_string()))?;
                }
            }
            Message::Notification { method, params } if method == "update" => {
                if let Some(u) = params.get(1) {
                    self.apply_update(u)?;
                }
            }
            Message::Notification { .. } => {}
            Message::Response { result, id } => {
                if Some(&id) == want_id {
                    return Ok(Some(Ok(result)));
                }
            }
            Message::Error { error, id } => {
                if Some(&id) == want_id {
                    return Ok(Some(Err(error)));
                }
            }
        }
        Ok(None)
    }

    async fn recv(&mut self) -> Result<Message, IdlError> {
        match self.conn.recv().await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(IdlError::Closed),
            Err(e) => Err(IdlError::Protocol(e.to_string())),
        }
    }

    pub async fn request(&mut self, method: &str, params: Vec<Value>) -> Result<Value, IdlError> {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.conn
            .send(&Message::request(method, params, id.clone()))
            .await
            .map_err(|e| IdlError::Protocol(e.to_string()))?;
        loop {
            let msg = self.recv().await?;
            if let Some(r) = self.handle(msg, Some(&id)).await? {
                return r.map_err(|e| IdlError::Protocol(e.to_string()));
            }
        }
    }

    pub async fn wait_for_update(&mut self) -> Result<(), IdlError> {
        let seqno = self.seqno;
        while self.seqno == seqno {
            let msg = self.recv().await?;
            self.handle(msg, None).await?;
        }
        Ok(())
    }

    pub fn txn(&self) -> Txn {
        Txn { schema: Some(self.schema.clone()), ..Txn::default() }
    }

    pub async fn commit(&mut self, txn: Txn) -> Result<TxnOutcome, IdlError> {
        let Some((ops, inc_index)) = txn.to_operations(&self.schema.name) else {
            return Ok(TxnOutcome {
                status: TxnStatus::Unchanged,
                inserted: HashMap::new(),
                increment_new_value: None,
            });
        };
        self.next_id += 1;
        let id = json!(self.next_id);
        self.conn
            .send(&Message::request("transact", ops, id.clone()))
            .await
            .map_err(|e| IdlError::Protocol(e.to_string()))?;
        let reply = loop {
            let msg = self.recv().await?;
            if let Some(r) = self.handle(msg, Some(&id)).await? {
                break r;
            }
        };
        let results = match reply {
            Err(e) => {
                let status =
                    if e == json!("canceled") { TxnStatus::TryAgain } else { TxnStatus::Error(sorted_json(&e)) };
                return Ok(TxnOutcome { status, inserted: HashMap::new(), increment_new_value: None });
            }
            Ok(Value::Array(r)) => r,
            Ok(other) => {
                return Ok(TxnOutcome {
                    status: TxnStatus::Error(sorted_json(&other)),
                    inserted: HashMap::new(),
                    increment_new_value: None,
                });
            }
        };
        let (mut hard, mut soft, mut lock) = (None, 0, 0);
        for r in &results {
            match r.get("error").and_then(Value::as_str) {
                _ if r.is_null() => soft += 1,
                Some("timed out") | Some("unknown database") => soft += 1,
                Some("not owner") => lock += 1,
                Some("aborted") => {}
                Some(_) => hard = hard.or(Some(sorted_json(r))),
                None => {}
            }
        }
        let mut outcome =
            TxnOutcome { status: TxnStatus::Success, inserted: HashMap::new(), increment_new_value: None };
        outcome.status = if let Some(h) = hard {
            TxnStatus::Error(h)
        } else if lock > 0 {
            TxnStatus::NotLocked
        } else if soft > 0 {
            TxnStatus::TryAgain
        } else {
            TxnStatus::Success
        };
        if outcome.status == TxnStatus::Success {
            // Results are aligned with operations; operation 0 is the database name.
            let n_waits = txn.verified.len();
            for (i, temp) in txn.inserted.iter().enumerate() {
                if let Some(real) = results
                    .get(n_waits + i)
                    .and_then(|r| r.get("uuid"))
                    .and_then(|u| u.get(1))
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                {
                    outcome.inserted.insert(temp.1, real);
                }
            }
            if let (Some(i), Some((_, _, column))) = (inc_index, &txn.increment) {
                outcome.increment_new_value = results.get(i + 1).and_then(|r| r["rows"][0][column.as_str()].as_i64());
            }
        }
        Ok(outcome)
    }
}

fn sorted_json(v: &Value) -> String {
    // serde_json's default map is ordered by key, which matches OVS's JSSF_SORT.
    v.to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStatus {
    Unchanged,
    Success,
    TryAgain,
    Aborted,
    NotLocked,
    Error(String),
}

#[derive(Debug, Clone)]
pub struct TxnOutcome {
    pub status: TxnStatus,
    pub inserted: HashMap<Uuid, Uuid>,
    pub increment_new_value: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Txn {
    schema: Option<DatabaseSchema>,
    /// (table, temp uuid) in insertion order.
    inserted: Vec<(String, Uuid)>,
    writes: BTreeMap<(String, Uuid), BTreeMap<String, Datum>>,
    deleted: BTreeSet<(String, Uuid)>,
    verified: BTreeMap<(String, Uuid), BTreeMap<String, Datum>>,
    increment: Option<(String, Uuid, String)>,
    comments: Vec<String>,
    dry_run: bool,
}

impl Txn {
    pub fn insert(&mut self, table: &str) -> Uuid {
        let u = Uuid::new_v4();
        self.inserted.push((table.to_string(), u));
        self.writes.entry((table.to_string(), u)).or_default();
        u
    }
    pub fn write(&mut self, table: &str, row: &Uuid, column: &str, value: Datum) {
        self.writes.entry((table.to_string(), *row)).or_default().insert(column.to_string(), value);
    }
    pub fn delete(&mut self, table: &str, row: &Uuid) {
        let key = (table.to_string(), *row);
        if let Some(i) = self.inserted.iter().position(|(t, u)| t == table && u == row) {
            self.inserted.remove(i);
            self.writes.remove(&key);
            return;
        }
        self.writes.remove(&key);
        self.deleted.insert(key);
    }
    pub fn verify(&mut self, replica: &Replica, table: &str, row: &Uuid, column: &str) {
        if let Some(d) = replica.row(table, row).and_then(|r| r.get(column)) {
            self.verified.entry((table.to_string(), *row)).or_default().insert(column.to_string(), d.clone());
        }
    }
    pub fn increment(&mut self, table: &str, row: &Uuid, column: &str) {
        self.increment = Some((table.to_string(), *row, column.to_string()));
    }
    pub fn comment(&mut self, text: &str) {
        self.comments.push(text.to_string());
    }
    pub fn set_dry_run(&mut self, dry: bool) {
        self.dry_run = dry;
    }
    pub fn is_empty(&self) -> bool {
        self.inserted.is_empty() && self.deleted.is_empty() && self.writes.values().all(|w| w.is_empty())
    }
    pub fn is_inserted(&self, row: &Uuid) -> bool {
        self.inserted.iter().any(|(_, u)| u == row)
    }
    pub fn read(&self, replica: &Replica, table: &str, row: &Uuid, column: &str) -> Option<Datum> {
        let key = (table.to_string(), *row);
        if self.deleted.contains(&key) {
            return None;
        }
        if let Some(d) = self.writes.get(&key).and_then(|w| w.get(column)) {
            return Some(d.clone());
        }
        if self.is_inserted(row) {
            let c = self.schema.as_ref()?.tables.get(table)?.columns.get(column)?;
            return Some(Datum::default_for(&c.type_));
        }
        replica.row(table, row).and_then(|r| r.get(column)).cloned()
    }
    pub fn rows(&self, replica: &Replica, table: &str) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = replica
            .table(table)
            .map(|t| t.rows.keys().filter(|u| !self.deleted.contains(&(table.to_string(), **u))).copied().collect())
            .unwrap_or_default();
        v.extend(self.inserted.iter().filter(|(t, _)| t == table).map(|(_, u)| *u));
        v
    }

    fn named(&self, u: &Uuid) -> Option<String> {
        self.is_inserted(u).then(|| format!("row{}", u.simple()))
    }

    /// Rewrites ["uuid", temp] into ["named-uuid", name].
    fn substitute(&self, v: Value) -> Value {
        match v {
            Value::Array(a) => {
                if a.len() == 2
                    && a[0] == "uuid"
                    && let Some(n) = a[1].as_str().and_then(|s| Uuid::parse_str(s).ok()).and_then(|u| self.named(&u))
                {
                    return json!(["named-uuid", n]);
                }
                Value::Array(a.into_iter().map(|x| self.substitute(x)).collect())
            }
            other => other,
        }
    }

    fn where_uuid(&self, u: &Uuid) -> Value {
        self.substitute(json!([["_uuid", "==", ["uuid", u.to_string()]]]))
    }

    /// The transact params and the index (in the result array) of the
    /// increment's mutate, or None when there is nothing to send.
    fn to_operations(&self, db: &str) -> Option<(Vec<Value>, Option<usize>)> {
        if self.is_empty() {
            return None;
        }
        let mut ops = vec![json!(db)];
        // Prerequisites first: they must see the database as it was read.
        for ((table, u), cols) in &self.verified {
            let mut row = serde_json::Map::new();
            for (c, d) in cols {
                row.insert(c.clone(), d.to_json());
            }
            let columns: Vec<&String> = cols.keys().collect();
            ops.push(json!({"op": "wait", "timeout": 0, "table": table, "where": self.where_uuid(u),
                "columns": columns, "until": "==", "rows": [row]}));
        }
        for (table, u) in &self.inserted {
            let mut row = serde_json::Map::new();
            for (c, d) in self.writes.get(&(table.clone(), *u)).into_iter().flatten() {
                row.insert(c.clone(), self.substitute(d.to_json()));
            }
            ops.push(json!({"op": "insert", "table": table, "uuid-name": self.named(u), "row": row}));
        }
        for ((table, u), cols) in &self.writes {
            if self.is_inserted(u) || cols.is_empty() {
                continue;
            }
            let mut row = serde_json::Map::new();
            for (c, d) in cols {
                row.insert(c.clone(), self.substitute(d.to_json()));
            }
            ops.push(json!({"op": "update", "table": table, "where": self.where_uuid(u), "row": row}));
        }
        for (table, u) in &self.deleted {
            ops.push(json!({"op": "delete", "table": table, "where": self.where_uuid(u)}));
        }
        let mut inc_index = None;
        if let Some((table, u, column)) = &self.increment {
            inc_index = Some(ops.len() - 1);
            ops.push(json!({"op": "mutate", "table": table, "where": self.where_uuid(u),
                "mutations": [[column, "+=", 1]]}));
            ops.push(json!({"op": "select", "table": table, "where": self.where_uuid(u), "columns": [column]}));
        }
        if !self.comments.is_empty() {
            ops.push(json!({"op": "comment", "comment": self.comments.join("\n")}));
        }
        if self.dry_run {
            ops.push(json!({"op": "abort"}));
        }
        Some((ops, inc_index))
    }
}
