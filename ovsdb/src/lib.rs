//! OVSDB: the data model, transaction engine, log storage, server and client
//! IDL. Empty until the OVSDB issue lands; nothing here pretends to work yet.
