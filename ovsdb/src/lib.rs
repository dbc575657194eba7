//! OVSDB (RFC 7047 and the extensions Open vSwitch uses).
//!
//! Here so far: the data model — atoms, types with their constraints, datums
//! (sets and maps) and schemas — read and written in OVS's JSON forms. The
//! transaction engine, storage, server and client IDL ([`idl`], with typed
//! Open_vSwitch access in [`vswitch`]) build on it.
pub mod atom;
pub mod condition;
pub mod data_string;
pub mod datum;
pub mod db;
pub mod error;
pub mod fast_hash;
pub mod idl;
pub mod json_text;
pub mod jsonrpc;
pub mod log;
pub mod monitor;
pub mod mutation;
pub mod net;
pub mod op_result;
pub mod relay;
pub mod replication;
pub mod schema;
pub mod server;
pub mod txn;
pub mod types;
pub mod vlog;
pub mod vswitch;

pub use atom::{Atom, AtomicType};
pub use datum::Datum;
pub use error::{OvsdbError, Result};
pub use schema::{ColumnSchema, DatabaseSchema, TableSchema};
pub use types::{BaseType, RefType, Type};
