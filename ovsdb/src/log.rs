//! The on-disk log of a *standalone* OVSDB database, in the format Open
//! vSwitch's `ovsdb-server` and `ovsdb-tool` read and write (see `ovsdb(5)`).
//!
//! A log file is a sequence of records. Each record is a header line and a
//! body:
//!
//! ```text
//! OVSDB JSON <length> <sha1>\n
//! <json>\n
//! ```
//!
//! `<length>` is the size in bytes of the body *including* its trailing new
//! line, in decimal; `<sha1>` is the SHA-1 of those same bytes, 40 lowercase
//! hex digits. The body is one JSON object written on one line. In a database
//! file the first record is the schema and each later record a transaction
//! (or, right after a compaction, the whole contents); this module does not
//! look inside them beyond requiring objects, except for the helpers at the end
//! for the `_date` / `_comment` / `_is_diff` members of transaction records.
//!
//! A file whose first header has the magic `CLUSTER` instead of `JSON` is a
//! clustered (Raft) database, which is refused.
//!
//! Reading stops at the first record that cannot be read: a bad header line, a
//! length running past the end of the file, a hash mismatch, a body that is not
//! JSON or not an object. As in `ovsdb-server` this is not fatal: the records
//! before it are returned, [`Log::read_error`] tells what was wrong, and the
//! first [`Log::append`] truncates the file at the end of the last good record.
//! (Real `ovsdb-tool`, by contrast, refuses such a file until a server has
//! written to it.) The one exception is the very first header line: if it is
//! not a header at all, the file is not a log and opening fails.
//!
//! Writers take the same lock as OVS: a POSIX `fcntl` write lock on the whole
//! of a lock file named `.<name>.~lock~` in the database's directory (after
//! following symlinks), created with mode 0600 and never removed. So a running
//! `ovsdb-server` or `ovsdb-tool` and we exclude each other. Read-only opens
//! take no lock. Within one process a second lock of the same file fails at
//! once (POSIX locks are per process, so the kernel would not refuse it).
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

/// The magic of a standalone database log: the word after `OVSDB ` in headers.
pub const OVSDB_MAGIC: &str = "JSON";
/// The magic of a clustered (Raft) database log, which we do not support.
pub const CLUSTER_MAGIC: &str = "CLUSTER";

/// OVS's compaction policy for standalone databases (`ovsdb/storage.c`,
/// `ovsdb/log.c`), for the server to apply:
///
/// * No compaction before [`COMPACT_MIN_INTERVAL_MS`] plus a random delay of
///   up to [`COMPACT_INTERVAL_JITTER_MS`] since opening or the last
///   compaction (a tenth of each to retry after a failed compaction).
/// * Before [`COMPACT_MAX_INTERVAL_MS`] since then: compact if at least
///   [`COMPACT_MIN_RECORDS`] records have been read and written since the
///   database was opened and [`Log::grew_lots`].
/// * After it: compact if any record has been read or written at all.
///
/// The size a log must exceed before [`Log::grew_lots`] can be true.
pub const COMPACT_MIN_LOG_SIZE: u64 = 10 * 1024 * 1024;
/// See [`COMPACT_MIN_LOG_SIZE`].
pub const COMPACT_MIN_RECORDS: u64 = 100;
/// See [`COMPACT_MIN_LOG_SIZE`].
pub const COMPACT_MIN_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// See [`COMPACT_MIN_LOG_SIZE`].
pub const COMPACT_INTERVAL_JITTER_MS: u64 = 10 * 60 * 1000;
/// See [`COMPACT_MIN_LOG_SIZE`].
pub const COMPACT_MAX_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;

/// OVS reads a header line with `fgets` into a 128-byte buffer: a header
/// longer than 127 bytes (new line included) cannot be read.
const MAX_HEADER_LEN: usize = 127;

/// How to open a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read the records; no lock is taken and nothing can be written.
    ReadOnly,
    /// Read the records, then append; the file must exist. Locks the file.
    ReadWrite,
    /// Create a new, empty log; fails if the file exists. Locks the file.
    CreateExcl,
}

/// Why the records of a log stop where they do (see [`Log::read_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// The header line is not `OVSDB JSON <length> <sha1>\n`.
    BadHeader,
    /// The file ends inside the record's body.
    Truncated,
    /// The body does not have the SHA-1 its header gives.
    BadHash,
    /// The body is not JSON.
    BadJson,
    /// The body is JSON but not an object.
    NotObject,
    /// Reading failed.
    Io,
}

/// A record that could not be read; the records before it were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub kind: ReadErrorKind,
    /// Where the bad record starts: the end of the last good one.
    pub offset: u64,
    /// How many bytes follow `offset` in the file: what the first append
    /// throws away.
    pub discarded: u64,
    /// OVS's wording of the error, e.g. `db: error reading 116 bytes
    /// starting at offset 14873 (End of file)`.
    pub message: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Errors from opening, writing, syncing or replacing a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {op} failed ({source})")]
    Io { path: String, op: String, source: io::Error },
    /// Another process holds the lock (`pid` as `F_GETLK` reports it).
    #[error("{path}: failed to lock lockfile ({lockfile}: already locked{})",
            match pid { Some(p) => format!(" by pid {p}"), None => String::new() })]
    Locked { path: String, lockfile: String, pid: Option<i32> },
    /// This process already holds the lock (another open [`Log`]).
    #[error("{path}: failed to lock lockfile ({lockfile}: already locked by this process)")]
    LockedBySelf { path: String, lockfile: String },
    #[error("{path}: clustered databases are not supported")]
    Clustered { path: String },
    #[error("{path}: unexpected file format")]
    BadFormat { path: String },
    #[error("{path}: cannot identify file type")]
    UnknownMagic { path: String, magic: String },
    #[error("{path}: log is open read-only")]
    ReadOnly { path: String },
    #[error("log records must be JSON objects")]
    NotObject,
    #[error("no record {index} to discard from (the log has {len})")]
    NoSuchRecord { index: usize, len: usize },
    #[error("{path}: compaction already in progress")]
    RewriteInProgress { path: String },
    #[error("{path}: compaction was cancelled")]
    RewriteCancelled { path: String },
}

impl LogError {
    fn io(path: &str, op: impl Into<String>, source: io::Error) -> Self {
        LogError::Io { path: path.to_string(), op: op.into(), source }
    }

    /// Whether the error is a lock held by another process or by this one.
    pub fn is_locked(&self) -> bool {
        matches!(self, LogError::Locked { .. } | LogError::LockedBySelf { .. })
    }

    /// Whether opening failed because the file does not exist (read modes).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// Whether creating failed because the file exists (`CreateExcl`).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}

/// An open log file.
#[derive(Debug)]
pub struct Log {
    /// The name as given, for messages.
    display: String,
    /// The absolute name.
    path: PathBuf,
    mode: OpenMode,
    file: File,
    _lock: Option<LockFile>,
    /// End of the last good record: where the next append goes.
    offset: u64,
    /// The offset at the last compaction (see [`Log::grew_lots`]).
    base: u64,
    /// Start offsets of the records in the file, in order.
    starts: Vec<u64>,
    /// Bytes past `offset` must be cut before the next append.
    needs_truncate: bool,
    /// Appended since the last successful `commit`.
    dirty: bool,
    read_error: Option<ReadError>,
    n_read: u64,
    n_written: u64,
    /// While a rewrite (online compaction) is open: the records appended
    /// since it started, to be copied into the new file when it finishes.
    rewrite_tail: Option<Vec<Vec<u8>>>,
    /// Counts rewrites started, so a cancelled one can't finish.
    rewrite_gen: u64,
}

impl Log {
    /// Opens (or, for [`OpenMode::CreateExcl`], creates) the log at `path`
    /// and reads its records, returning them with the log positioned to append
    /// after the last good one. For a database the first record is the schema.
    /// A bad record stops reading without failing: see [`Log::read_error`].
    pub fn open(path: impl AsRef<Path>, mode: OpenMode) -> Result<(Log, Vec<Value>), LogError> {
        let given = path.as_ref();
        let display = given.display().to_string();
        let abs = std::path::absolute(given).map_err(|e| LogError::io(&display, "resolve path", e))?;

        let lock = if mode == OpenMode::ReadOnly { None } else { Some(LockFile::lock(&abs, &display)?) };

        let mut opts = OpenOptions::new();
        opts.read(true);
        match mode {
            OpenMode::ReadOnly => {}
            OpenMode::ReadWrite => {
                opts.write(true);
            }
            OpenMode::CreateExcl => {
                opts.write(true).mode(0o660);
                // O_EXCL fails on a dangling symlink, whose target we want to
                // create, so then (like OVS) accept the race instead.
                let dangling = fs::metadata(&abs).is_err()
                    && fs::symlink_metadata(&abs).map(|m| m.file_type().is_symlink()).unwrap_or(false);
                if dangling {
                    opts.create(true).truncate(false);
                } else {
                    opts.create_new(true);
                }
            }
        }
        let op = if mode == OpenMode::CreateExcl { "create" } else { "open" };
        let file = opts.open(&abs).map_err(|e| LogError::io(&display, op, e))?;
        let file_len = file.metadata().map_err(|e| LogError::io(&display, "stat", e))?.len();

        if file_len == 0 {
            // Probably a new file: make its directory entry durable.
            if mode != OpenMode::ReadOnly {
                sync_parent_dir(&abs).map_err(|e| LogError::io(&display, "fsync of directory", e))?;
            }
        } else {
            let mut first = Vec::new();
            BufReader::new((&file).take(MAX_HEADER_LEN as u64))
                .read_until(b'\n', &mut first)
                .map_err(|e| LogError::io(&display, "read", e))?;
            match parse_header(&first) {
                None => return Err(LogError::BadFormat { path: display }),
                Some((magic, _, _)) if magic == CLUSTER_MAGIC => return Err(LogError::Clustered { path: display }),
                Some((magic, _, _)) if magic != OVSDB_MAGIC => {
                    return Err(LogError::UnknownMagic { path: display, magic: magic.to_string() });
                }
                Some(_) => {}
            }
        }

        let mut log = Log {
            display,
            path: abs,
            mode,
            file,
            _lock: lock,
            offset: 0,
            base: 0,
            starts: Vec::new(),
            needs_truncate: false,
            dirty: false,
            read_error: None,
            n_read: 0,
            n_written: 0,
            rewrite_tail: None,
            rewrite_gen: 0,
        };
        let records = log.read_all(file_len)?;
        Ok((log, records))
    }

    fn read_all(&mut self, file_len: u64) -> Result<Vec<Value>, LogError> {
        (&self.file).seek(SeekFrom::Start(0)).map_err(|e| LogError::io(&self.display, "seek", e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, &self.file);
        let mut records = Vec::new();
        loop {
            match read_record(&mut reader, &self.display, self.offset, file_len) {
                Ok(None) => break,
                Ok(Some((value, end))) => {
                    self.starts.push(self.offset);
                    self.offset = end;
                    records.push(value);
                    self.n_read += 1;
                    // OVS measures growth from the end of the schema and the
                    // first transaction (the snapshot, after a compaction).
                    if self.n_read == 2 {
                        self.base = self.offset;
                    }
                }
                Err((kind, message)) => {
                    self.read_error =
                        Some(ReadError { kind, offset: self.offset, discarded: file_len - self.offset, message });
                    self.needs_truncate = true;
                    break;
                }
            }
        }
        Ok(records)
    }

    /// Appends one record (a JSON object). It is durable only once
    /// [`Log::commit`] returns; several appends may share one commit. The
    /// first append after opening a log with a bad tail (or after
    /// [`Log::discard_from`]) first truncates the file to the good records.
    pub fn append(&mut self, record: &Value) -> Result<(), LogError> {
        if !record.is_object() {
            return Err(LogError::NotObject);
        }
        self.append_encoded(encode_record(record))
    }

    /// [`Log::append`] for a record already written as JSON text: `json`
    /// must be one JSON object (e.g. [`crate::db::Commit::log_record_text`]).
    pub fn append_text(&mut self, json: &[u8]) -> Result<(), LogError> {
        if json.first() != Some(&b'{') {
            return Err(LogError::NotObject);
        }
        self.append_encoded(encode_record_text(json))
    }

    fn append_encoded(&mut self, bytes: Vec<u8>) -> Result<(), LogError> {
        self.check_writable()?;
        if self.needs_truncate {
            self.file
                .set_len(self.offset)
                .map_err(|e| LogError::io(&self.display, format!("truncate to length {}", self.offset), e))?;
            self.needs_truncate = false;
            self.read_error = None;
            self.dirty = true;
        }
        if let Err(e) = self.file.write_all_at(&bytes, self.offset) {
            // Take back any partial write; if even that fails, retry the
            // truncation before the next append.
            if self.file.set_len(self.offset).is_err() {
                self.needs_truncate = true;
            }
            return Err(LogError::io(&self.display, "write", e));
        }
        self.starts.push(self.offset);
        self.offset += bytes.len() as u64;
        self.n_written += 1;
        self.dirty = true;
        if let Some(tail) = &mut self.rewrite_tail {
            tail.push(bytes);
        }
        Ok(())
    }

    /// Makes everything appended so far durable (`fdatasync`). A transaction
    /// may be acknowledged once this returns.
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.file.sync_data().map_err(|e| LogError::io(&self.display, "fsync", e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Atomically replaces the whole log by `records` (compaction): writes
    /// them to `<name>.tmp` beside the file, syncs it, renames it over the
    /// file and syncs the directory. The lock is kept throughout, and the log
    /// stays open for appending after the new records. On failure the old
    /// file is untouched and still in use.
    pub fn replace(&mut self, records: &[Value]) -> Result<(), LogError> {
        let mut rewrite = self.start_rewrite()?;
        if let Err(e) = rewrite.write(records) {
            self.abort_rewrite(rewrite);
            return Err(e);
        }
        self.finish_rewrite(rewrite)
    }

    /// Starts an online compaction: creates `<name>.tmp` for the new log.
    /// [`Rewrite::write`] fills it and may run on another thread while this
    /// log keeps taking appends; [`Log::finish_rewrite`] copies those appends
    /// over and swaps the files. Only one rewrite runs at a time.
    pub fn start_rewrite(&mut self) -> Result<Rewrite, LogError> {
        self.check_writable()?;
        if self.rewrite_tail.is_some() {
            return Err(LogError::RewriteInProgress { path: self.display.clone() });
        }
        let target = follow_symlinks(&self.path);
        let mut tmp_name = target.clone().into_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let display = tmp.display().to_string();

        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&display, "remove", e)),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o660)
            .open(&tmp)
            .map_err(|e| LogError::io(&display, "create", e))?;
        // Keep the old file's permissions (OVS would leave 0660 & ~umask).
        if let Ok(md) = self.file.metadata() {
            let mode = md.permissions().mode() & 0o7777;
            if let Err(e) = file.set_permissions(fs::Permissions::from_mode(mode)) {
                let _ = fs::remove_file(&tmp);
                return Err(LogError::io(&display, "chmod", e));
            }
        }
        self.rewrite_tail = Some(Vec::new());
        self.rewrite_gen += 1;
        Ok(Rewrite { tmp, target, display, file, starts: Vec::new(), offset: 0, generation: self.rewrite_gen })
    }

    /// Ends a rewrite whose [`Rewrite::write`] succeeded: appends the records
    /// this log took since [`Log::start_rewrite`], syncs the new file, renames
    /// it over the old one and continues in it. On failure the old file is
    /// untouched and still in use.
    pub fn finish_rewrite(&mut self, mut rw: Rewrite) -> Result<(), LogError> {
        if rw.generation != self.rewrite_gen || self.rewrite_tail.is_none() {
            // Cancelled: its temporary file is gone or belongs to a newer rewrite.
            return Err(LogError::RewriteCancelled { path: self.display.clone() });
        }
        let tail = self.rewrite_tail.take().unwrap_or_default();
        let snapshot_end = rw.offset;
        let done = (|| -> Result<(), LogError> {
            for bytes in &tail {
                rw.file.write_all_at(bytes, rw.offset).map_err(|e| LogError::io(&rw.display, "write", e))?;
                rw.starts.push(rw.offset);
                rw.offset += bytes.len() as u64;
            }
            rw.file.sync_all().map_err(|e| LogError::io(&rw.display, "fsync", e))?;
            fs::rename(&rw.tmp, &rw.target)
                .map_err(|e| LogError::io(&rw.display, format!("rename to \"{}\"", rw.target.display()), e))
        })();
        if let Err(e) = done {
            let _ = fs::remove_file(&rw.tmp);
            return Err(e);
        }
        // The rename is done: the new file is the log now. Like OVS, a
        // failure to sync the directory is not reported.
        let _ = sync_parent_dir(&rw.target);
        self.file = rw.file;
        self.starts = rw.starts;
        self.offset = rw.offset;
        self.base = snapshot_end;
        self.needs_truncate = false;
        self.dirty = false;
        self.read_error = None;
        Ok(())
    }

    /// Gives up a rewrite (its write failed, or it is no longer wanted):
    /// removes the temporary file; the log goes on as if it never started.
    pub fn abort_rewrite(&mut self, rw: Rewrite) {
        if rw.generation == self.rewrite_gen && self.rewrite_tail.take().is_some() {
            let _ = fs::remove_file(&rw.tmp);
        }
    }

    /// Cancels the open rewrite without having its [`Rewrite`] (it is still
    /// being written elsewhere): finishing it will fail and change nothing.
    pub fn cancel_rewrite(&mut self) {
        self.rewrite_tail = None;
    }

    /// Whether a rewrite started by [`Log::start_rewrite`] is still open.
    pub fn rewrite_in_progress(&self) -> bool {
        self.rewrite_tail.is_some()
    }

    /// Forgets the records from `index` on (as read or appended), as OVS's
    /// `ovsdb_log_unread` does for a record that makes no sense at a higher
    /// level: the next append truncates the file there and overwrites them.
    pub fn discard_from(&mut self, index: usize) -> Result<(), LogError> {
        if index > self.starts.len() {
            return Err(LogError::NoSuchRecord { index, len: self.starts.len() });
        }
        if index < self.starts.len() {
            self.offset = self.starts[index];
            self.starts.truncate(index);
            self.needs_truncate = true;
            if self.base > self.offset {
                self.base = self.offset;
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.mode == OpenMode::ReadOnly {
            return Err(LogError::ReadOnly { path: self.display.clone() });
        }
        Ok(())
    }

    /// Why reading stopped before the end of the file, if it did. Cleared by
    /// the first append (which cuts the bad tail off) or a replace.
    pub fn read_error(&self) -> Option<&ReadError> {
        self.read_error.as_ref()
    }

    /// The name the log was opened with.
    pub fn name(&self) -> &str {
        &self.display
    }

    /// The absolute path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    /// The size of the good records: where the next append goes, and the
    /// file's size once any bad tail has been cut off.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The log's size right after the last compaction (or, for a log just
    /// opened, after its first two records, as OVS counts).
    pub fn base_offset(&self) -> u64 {
        self.base
    }

    /// How many records the file holds (good ones read, plus appended).
    pub fn n_records(&self) -> usize {
        self.starts.len()
    }

    /// Records read when the log was opened.
    pub fn records_read(&self) -> u64 {
        self.n_read
    }

    /// Records appended since the log was opened (not those written by
    /// [`Log::replace`]). OVS's "log length" for [`COMPACT_MIN_RECORDS`] is
    /// `records_read() + records_written()`.
    pub fn records_written(&self) -> u64 {
        self.n_written
    }

    /// Records appended since the last compaction (or since opening).
    pub fn records_since_compaction(&self) -> usize {
        self.starts.iter().filter(|&&s| s >= self.base).count()
    }

    /// OVS's test of whether compacting is worthwhile: the log is over
    /// [`COMPACT_MIN_LOG_SIZE`] and more than twice its size after the last
    /// compaction.
    pub fn grew_lots(&self) -> bool {
        self.offset > COMPACT_MIN_LOG_SIZE && self.offset / 2 > self.base
    }
}

/// The new file of an online compaction (see [`Log::start_rewrite`]). It owns
/// its file, so [`Rewrite::write`] can run on a worker thread.
pub struct Rewrite {
    tmp: PathBuf,
    /// The file the log really is (symlinks followed): what `tmp` replaces.
    target: PathBuf,
    display: String,
    file: File,
    starts: Vec<u64>,
    offset: u64,
    generation: u64,
}

impl Rewrite {
    /// Writes `records` (the schema and a snapshot) and syncs them. The
    /// slow part of a compaction: serialising, hashing and the fsync.
    pub fn write(&mut self, records: &[Value]) -> Result<(), LogError> {
        if records.iter().any(|r| !r.is_object()) {
            return Err(LogError::NotObject);
        }
        let mut w = BufWriter::with_capacity(256 * 1024, &self.file);
        for record in records {
            let bytes = encode_record(record);
            w.write_all(&bytes).map_err(|e| LogError::io(&self.display, "write", e))?;
            self.starts.push(self.offset);
            self.offset += bytes.len() as u64;
        }
        w.flush().map_err(|e| LogError::io(&self.display, "write", e))?;
        drop(w);
        self.file.sync_data().map_err(|e| LogError::io(&self.display, "fsync", e))
    }
}

/// The bytes of one record holding `value`: header line and body.
pub fn encode_record(value: &Value) -> Vec<u8> {
    encode_record_text(&serde_json::to_vec(value).expect("a JSON value always serializes"))
}

/// The bytes of one record whose JSON text is `json`.
pub fn encode_record_text(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 80);
    let mut ctx = Sha1::new();
    ctx.update(json);
    ctx.update(b"\n");
    let digest = ctx.finalize();
    let _ = write!(out, "OVSDB {OVSDB_MAGIC} {} ", json.len() + 1);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out.push(b'\n');
    out.extend_from_slice(json);
    out.push(b'\n');
    out
}

/// The header line, new line included, of a record whose body (its JSON and
/// trailing new line) is `body`: `OVSDB <magic> <length> <sha1>\n`.
pub fn record_header(magic: &str, body: &[u8]) -> String {
    format!("OVSDB {magic} {} {}\n", body.len(), sha1_hex(body))
}

fn sha1_hex(data: &[u8]) -> String {
    let digest = Sha1::digest(data);
    let mut s = String::with_capacity(40);
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a header line as OVS does: `OVSDB `, a magic, a space, a nonzero
/// decimal length, a space, 40 hex digits and a new line, nothing else.
fn parse_header(line: &[u8]) -> Option<(&str, u64, [u8; 20])> {
    let rest = line.strip_prefix(b"OVSDB ")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let magic = std::str::from_utf8(&rest[..sp]).ok()?;
    let rest = &rest[sp + 1..];
    let ndigits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if ndigits == 0 || rest.get(ndigits) != Some(&b' ') {
        return None;
    }
    let length: u64 = std::str::from_utf8(&rest[..ndigits]).ok()?.parse().ok()?;
    if length == 0 || length == u64::MAX {
        return None;
    }
    let rest = &rest[ndigits + 1..];
    if rest.len() != 41 || rest[40] != b'\n' {
        return None;
    }
    let mut sha1 = [0u8; 20];
    for (i, pair) in rest[..40].chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        sha1[i] = (hi * 16 + lo) as u8;
    }
    Some((magic, length, sha1))
}

/// Reads the record at `offset` (where `r` is positioned). `Ok(None)` at a
/// clean end of file; otherwise the record and the offset of its end, or the
/// kind of error and OVS's message for it.
fn read_record(
    r: &mut impl BufRead,
    name: &str,
    offset: u64,
    file_len: u64,
) -> Result<Option<(Value, u64)>, (ReadErrorKind, String)> {
    let mut header = Vec::new();
    Read::take(&mut *r, MAX_HEADER_LEN as u64)
        .read_until(b'\n', &mut header)
        .map_err(|e| (ReadErrorKind::Io, format!("{name}: read failed ({e})")))?;
    if header.is_empty() {
        return Ok(None);
    }
    let parsed = parse_header(&header).filter(|(magic, _, _)| *magic == OVSDB_MAGIC);
    let Some((_, length, expected)) = parsed else {
        let shown = String::from_utf8_lossy(&header);
        let shown = shown.split('\n').next().unwrap_or("");
        return Err((
            ReadErrorKind::BadHeader,
            format!("{name}: parse error at offset {offset} in header line \"{shown}\""),
        ));
    };
    let data_offset = offset + header.len() as u64;
    if length > file_len.saturating_sub(data_offset) {
        return Err((
            ReadErrorKind::Truncated,
            format!("{name}: error reading {length} bytes starting at offset {data_offset} (End of file)"),
        ));
    }
    let mut body = vec![0u8; length as usize];
    if let Err(e) = r.read_exact(&mut body) {
        let (kind, why) = if e.kind() == io::ErrorKind::UnexpectedEof {
            (ReadErrorKind::Truncated, "End of file".to_string())
        } else {
            (ReadErrorKind::Io, e.to_string())
        };
        return Err((kind, format!("{name}: error reading {length} bytes starting at offset {data_offset} ({why})")));
    }
    let actual: [u8; 20] = Sha1::digest(&body).into();
    if actual != expected {
        let hex = |h: &[u8; 20]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        return Err((
            ReadErrorKind::BadHash,
            format!(
                "{name}: {length} bytes starting at offset {data_offset} have SHA-1 hash {} but should have hash {}",
                hex(&actual),
                hex(&expected)
            ),
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        (
            ReadErrorKind::BadJson,
            format!("{name}: {length} bytes starting at offset {data_offset} are not valid JSON ({e})"),
        )
    })?;
    if !value.is_object() {
        return Err((
            ReadErrorKind::NotObject,
            format!("{name}: {length} bytes starting at offset {data_offset} are not a JSON object"),
        ));
    }
    Ok(Some((value, data_offset + length)))
}

/// Follows `path` through up to 10 levels of symlinks, as OVS does to place
/// its lock and temporary files beside the real file.
fn follow_symlinks(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..10 {
        match fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {}
            _ => return p,
        }
        let Ok(target) = fs::read_link(&p) else { return p };
        p = if target.is_absolute() {
            target
        } else {
            match p.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(target),
                _ => target,
            }
        };
    }
    p
}

/// The lock file OVS uses for `path`: `.<name>.~lock~` beside the file that
/// `path` names after following symlinks.
pub fn lockfile_name(path: &Path) -> PathBuf {
    let real = follow_symlinks(path);
    let mut name = std::ffi::OsString::from(".");
    name.push(real.file_name().unwrap_or_default());
    name.push(".~lock~");
    match real.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Lock files this process holds, by (device, inode).
static HELD_LOCKS: Mutex<Option<HashSet<(u64, u64)>>> = Mutex::new(None);

/// A held lock on a log (see the module documentation). Dropping it unlocks.
#[derive(Debug)]
struct LockFile {
    _file: File,
    key: (u64, u64),
}

impl LockFile {
    fn lock(db_path: &Path, display: &str) -> Result<LockFile, LogError> {
        let name = lockfile_name(db_path);
        let shown = name.display().to_string();
        let mut held = HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        let held = held.get_or_insert_with(HashSet::new);
        // Never open the lock file again while holding it: closing that
        // descriptor would drop the process's lock.
        if let Ok(md) = fs::metadata(&name)
            && held.contains(&(md.dev(), md.ino()))
        {
            return Err(LogError::LockedBySelf { path: display.to_string(), lockfile: shown });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&name)
            .map_err(|e| LogError::io(display, format!("open of lock file {shown}"), e))?;
        let md = file.metadata().map_err(|e| LogError::io(display, format!("stat of lock file {shown}"), e))?;
        let key = (md.dev(), md.ino());
        match sys::try_write_lock(&file) {
            Ok(()) => {}
            Err(sys::LockError::Held(pid)) => {
                return Err(LogError::Locked { path: display.to_string(), lockfile: shown, pid });
            }
            Err(sys::LockError::Io(e)) => {
                return Err(LogError::io(display, format!("lock of lock file {shown}"), e));
            }
        }
        held.insert(key);
        Ok(LockFile { _file: file, key })
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let mut held = HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = held.as_mut() {
            held.remove(&self.key);
        }
        // The file closes after this, which releases the fcntl lock.
    }
}

/// `fcntl` record locks, which is what OVS's lockfile.c uses. (`flock` locks
/// would not conflict with them.)
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    pub enum LockError {
        Held(Option<i32>),
        Io(io::Error),
    }

    fn whole_file_write_lock() -> libc::flock {
        // SAFETY: all-zero is a valid `struct flock`; the fields that matter are set below.
        let mut l: libc::flock = unsafe { std::mem::zeroed() };
        l.l_type = libc::F_WRLCK as _;
        l.l_whence = libc::SEEK_SET as _;
        l
    }

    /// Takes a write lock on all of `file` without waiting.
    pub fn try_write_lock(file: &File) -> Result<(), LockError> {
        let fd = file.as_raw_fd();
        let mut l = whole_file_write_lock();
        // SAFETY: `fd` is open and `l` is a valid `struct flock`.
        if unsafe { libc::fcntl(fd, libc::F_SETLK, &mut l) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => {
                let mut q = whole_file_write_lock();
                // SAFETY: as above.
                let ok = unsafe { libc::fcntl(fd, libc::F_GETLK, &mut q) } == 0;
                let pid =
                    if ok && q.l_type != libc::F_UNLCK as libc::c_short && q.l_pid > 0 { Some(q.l_pid) } else { None };
                Err(LockError::Held(pid))
            }
            _ => Err(LockError::Io(err)),
        }
    }
}

// ---------------------------------------------------------------------------
// Transaction records.

/// The member of a transaction record giving its time, in milliseconds since
/// the epoch (an integer).
pub const TXN_DATE: &str = "_date";
/// The member of a transaction record holding the client's comment(s).
pub const TXN_COMMENT: &str = "_comment";
/// The member (`true`) telling that modified rows hold only the changed
/// columns, each as a diff (OVS ≥ 2.15 writes this by default).
pub const TXN_IS_DIFF: &str = "_is_diff";

/// Whether a member of a transaction record is an annotation rather than a
/// table (OVS skips these three names when they are not tables).
pub fn is_annotation(key: &str) -> bool {
    matches!(key, TXN_DATE | TXN_COMMENT | TXN_IS_DIFF)
}

/// Now, in milliseconds since the epoch, for [`TXN_DATE`].
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Adds to a transaction record what OVS's `ovsdb_file_txn_annotate` adds:
/// `_comment` if there is one, `_is_diff: true` if the rows are diffs, and
/// `_date`.
pub fn annotate_txn(record: &mut Map<String, Value>, comment: Option<&str>, is_diff: bool, date_ms: i64) {
    if let Some(c) = comment {
        record.insert(TXN_COMMENT.to_string(), Value::String(c.to_string()));
    }
    if is_diff {
        record.insert(TXN_IS_DIFF.to_string(), Value::Bool(true));
    }
    record.insert(TXN_DATE.to_string(), Value::from(date_ms));
}

/// A transaction record: `tables` (table name → row UUID → row) annotated
/// as by [`annotate_txn`].
pub fn txn_record(tables: Map<String, Value>, comment: Option<&str>, is_diff: bool, date_ms: i64) -> Value {
    let mut record = tables;
    annotate_txn(&mut record, comment, is_diff, date_ms);
    Value::Object(record)
}

/// The annotations of a transaction record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnMeta {
    /// `_date`, if present and an integer.
    pub date_ms: Option<i64>,
    /// `_comment`, if present and a string.
    pub comment: Option<String>,
    /// `_is_diff` is `true`.
    pub is_diff: bool,
}

/// Reads the annotations of a transaction record.
pub fn txn_meta(record: &Map<String, Value>) -> TxnMeta {
    TxnMeta {
        date_ms: record.get(TXN_DATE).and_then(Value::as_i64),
        comment: record.get(TXN_COMMENT).and_then(Value::as_str).map(str::to_string),
        is_diff: record.get(TXN_IS_DIFF) == Some(&Value::Bool(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::process::{Command, Output, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("oxvs-log-{}-{tag}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Whether the real OVS tools are here. Tests that need them skip when
    /// they are not, except under CI (`cargo xtask setup` installs them).
    fn have_ovs() -> bool {
        let ok = Command::new("ovsdb-tool").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
            && Path::new(VSWITCH_SCHEMA).exists();
        if !ok {
            if std::env::var_os("CI").is_some() {
                panic!("ovsdb-tool or {VSWITCH_SCHEMA} missing (install openvswitch-common)");
            }
            eprintln!("skipping: ovsdb-tool or {VSWITCH_SCHEMA} not installed");
        }
        ok
    }

    fn tool(args: &[&str]) -> Output {
        Command::new("ovsdb-tool").args(args).stdin(Stdio::null()).output().expect("run ovsdb-tool")
    }

    fn tool_ok(args: &[&str]) -> String {
        let out = tool(args);
        assert!(
            out.status.success(),
            "ovsdb-tool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn vswitch_schema() -> Value {
        serde_json::from_str(&fs::read_to_string(VSWITCH_SCHEMA).unwrap()).unwrap()
    }

    /// The rows of the QoS table (a root table without a row limit, unlike
    /// Open_vSwitch), as `ovsdb-tool query` prints them.
    fn select_all(db: &Path) -> String {
        tool_ok(&[
            "query",
            db.to_str().unwrap(),
            r#"["Open_vSwitch",{"op":"select","table":"QoS","where":[],"columns":["_uuid","type"]}]"#,
        ])
    }

    /// A transaction record inserting a QoS row whose `type` is `value`.
    fn insert_record(uuid: &str, value: &str) -> Value {
        let mut tables = Map::new();
        tables.insert("QoS".into(), json!({ uuid: { "type": value } }));
        txn_record(tables, Some("oxvs test"), false, now_ms())
    }

    fn write_db(path: &Path, records: &[Value]) {
        let (mut log, read) = Log::open(path, OpenMode::CreateExcl).unwrap();
        assert!(read.is_empty());
        for r in records {
            log.append(r).unwrap();
        }
        log.commit().unwrap();
    }

    /// Splits a log's bytes into (header line, body) pairs by its lengths.
    fn split_records(bytes: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let nl = i + bytes[i..].iter().position(|&b| b == b'\n').unwrap();
            let header = &bytes[i..=nl];
            let len: usize = std::str::from_utf8(header).unwrap().split(' ').nth(2).unwrap().parse().unwrap();
            out.push((header, &bytes[nl + 1..nl + 1 + len]));
            i = nl + 1 + len;
        }
        out
    }

    #[test]
    fn header_format() {
        let body = b"{}\n";
        // sha1("{}\n")
        assert_eq!(record_header("JSON", body), "OVSDB JSON 3 5f36b2ea290645ee34d943220a14b54ee5ea5be5\n");
        assert_eq!(encode_record(&json!({})), b"OVSDB JSON 3 5f36b2ea290645ee34d943220a14b54ee5ea5be5\n{}\n".to_vec());
        let h = b"OVSDB JSON 3 5F36B2EA290645EE34D943220A14B54EE5EA5BE5\n";
        assert_eq!(parse_header(h).unwrap().1, 3);
        for bad in [
            &b"OVSDB JSON 0 5f36b2ea290645ee34d943220a14b54ee5ea5be5\n"[..],
            b"OVSDB JSON 3 d87ef9f9e4c5fd6fdd1ac3cf3dbc0ee32c2d4c2\n",
            b"OVSDB JSON 3 5f36b2ea290645ee34d943220a14b54ee5ea5be5",
            b"OVSDB JSON 3 5f36b2ea290645ee34d943220a14b54ee5ea5be5 \n",
            b"OVSDB JSON x 5f36b2ea290645ee34d943220a14b54ee5ea5be5\n",
            b"OVSDB JSON3 5f36b2ea290645ee34d943220a14b54ee5ea5be5\n",
            b"OVSDb JSON 3 5f36b2ea290645ee34d943220a14b54ee5ea5be5\n",
            b"OVSDB JSON 3 g87ef9f9e4c5fd6fdd1ac3cf3dbc0ee32c2d4c26\n",
        ] {
            assert!(parse_header(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn roundtrip_and_counters() {
        let dir = TempDir::new("roundtrip");
        let db = dir.path("a.db");
        let recs = vec![json!({"name": "x", "tables": {}}), json!({"T": {"u": {"a": 1}}}), json!({"s": "é\n\"\u{1}"})];
        {
            let (mut log, read) = Log::open(&db, OpenMode::CreateExcl).unwrap();
            assert!(read.is_empty());
            for r in &recs {
                log.append(r).unwrap();
            }
            log.commit().unwrap();
            assert_eq!(log.n_records(), 3);
            assert_eq!(log.records_written(), 3);
            assert_eq!(log.offset(), fs::metadata(&db).unwrap().len());
            assert!(matches!(log.append(&json!([1])), Err(LogError::NotObject)));
        }
        let expected_len: usize = recs.iter().map(|r| encode_record(r).len()).sum();
        assert_eq!(fs::metadata(&db).unwrap().len(), expected_len as u64);
        assert_eq!(fs::metadata(&db).unwrap().permissions().mode() & 0o7, 0, "0660 & umask");
        assert!(lockfile_name(&db).exists());
        assert_eq!(lockfile_name(&db), dir.path(".a.db.~lock~"));

        let (mut log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read, recs);
        assert!(log.read_error().is_none());
        assert_eq!(log.records_read(), 3);
        assert_eq!(log.base_offset(), (encode_record(&recs[0]).len() + encode_record(&recs[1]).len()) as u64);
        assert_eq!(log.records_since_compaction(), 1);
        assert!(!log.grew_lots());
        assert!(matches!(log.append(&json!({})), Err(LogError::ReadOnly { .. })));
        assert!(matches!(log.replace(&[]), Err(LogError::ReadOnly { .. })));

        // Exclusive creation refuses an existing file; opening a missing one fails.
        let err = Log::open(&db, OpenMode::CreateExcl).unwrap_err();
        assert!(err.is_already_exists(), "{err}");
        let err = Log::open(dir.path("none.db"), OpenMode::ReadWrite).unwrap_err();
        assert!(err.is_not_found(), "{err}");

        // An empty file is an empty log.
        File::create(dir.path("empty.db")).unwrap();
        let (_log, read) = Log::open(dir.path("empty.db"), OpenMode::ReadWrite).unwrap();
        assert!(read.is_empty());
    }

    #[test]
    fn discard_from_overwrites() {
        let dir = TempDir::new("discard");
        let db = dir.path("d.db");
        write_db(&db, &[json!({"a": 1}), json!({"b": 2}), json!({"c": 3})]);
        let (mut log, read) = Log::open(&db, OpenMode::ReadWrite).unwrap();
        assert_eq!(read.len(), 3);
        assert!(log.discard_from(4).is_err());
        log.discard_from(1).unwrap();
        assert_eq!(log.n_records(), 1);
        log.append(&json!({"d": 4})).unwrap();
        log.commit().unwrap();
        drop(log);
        let (_log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read, vec![json!({"a": 1}), json!({"d": 4})]);
    }

    #[test]
    fn reads_ovsdb_tool_files_byte_exact_headers() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("theirs");
        let db = dir.path("x.db");
        let dbs = db.to_str().unwrap();
        tool_ok(&["create", dbs, VSWITCH_SCHEMA]);
        tool_ok(&[
            "transact",
            dbs,
            r#"["Open_vSwitch",{"op":"insert","table":"Open_vSwitch","row":{"ovs_version":"a"}}]"#,
        ]);
        tool_ok(&[
            "transact",
            dbs,
            r#"["Open_vSwitch",{"op":"comment","comment":"hi"},{"op":"update","table":"Open_vSwitch","where":[],"row":{"ovs_version":"b"}}]"#,
        ]);

        let bytes = fs::read(&db).unwrap();
        let raw = split_records(&bytes);
        assert_eq!(raw.len(), 3);
        for (header, body) in &raw {
            // Our header for their body is their header, byte for byte.
            assert_eq!(record_header(OVSDB_MAGIC, body).as_bytes(), *header);
            assert_eq!(body.last(), Some(&b'\n'));
        }

        let (log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert!(log.read_error().is_none());
        assert_eq!(read.len(), 3);
        let schema = vswitch_schema();
        assert_eq!(read[0]["name"], schema["name"]);
        assert_eq!(read[0]["version"], schema["version"]);
        assert_eq!(log.offset(), bytes.len() as u64);
        let insert = read[1].as_object().unwrap();
        let meta = txn_meta(insert);
        assert!(meta.date_ms.is_some());
        assert!(meta.is_diff, "OVS 3.x writes _is_diff");
        let update = txn_meta(read[2].as_object().unwrap());
        assert_eq!(update.comment.as_deref(), Some("hi"));
        let rows = insert["Open_vSwitch"].as_object().unwrap();
        assert_eq!(rows.values().next().unwrap()["ovs_version"], "a");
        for (k, _) in insert {
            assert!(k == "Open_vSwitch" || is_annotation(k), "{k}");
        }
        drop(log);

        // We append to their file and they read the result.
        let (mut log, _) = Log::open(&db, OpenMode::ReadWrite).unwrap();
        let uuid = "5a0f5a3a-1d3c-4b6e-9e7b-0123456789ab";
        log.append(&insert_record(uuid, "ours")).unwrap();
        log.commit().unwrap();
        drop(log);
        let out = select_all(&db);
        assert!(out.contains(uuid) && out.contains("ours"), "{out}");
        let out = tool_ok(&[
            "query",
            dbs,
            r#"["Open_vSwitch",{"op":"select","table":"Open_vSwitch","where":[],"columns":["ovs_version"]}]"#,
        ]);
        assert!(out.contains("\"b\""), "{out}");
    }

    #[test]
    fn ovsdb_tool_reads_our_files() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("ours");
        let db = dir.path("o.db");
        let dbs = db.to_str().unwrap();
        let schema = vswitch_schema();
        let uuid = "0f2d1c3e-6d1a-4c52-8f3a-aa00bb11cc22";
        write_db(&db, &[schema.clone(), insert_record(uuid, "x")]);

        let log = tool_ok(&["show-log", "-mm", dbs]);
        assert!(log.contains("record 0: \"Open_vSwitch\" schema"), "{log}");
        assert!(log.contains("record 1:") && log.contains("oxvs test"), "{log}");
        assert!(log.contains("type=x"), "{log}");
        assert_eq!(tool_ok(&["db-name", dbs]).trim(), "Open_vSwitch");
        assert_eq!(tool_ok(&["db-version", dbs]).trim(), schema["version"].as_str().unwrap());
        let out = select_all(&db);
        assert!(out.contains(uuid) && out.contains("\"x\""), "{out}");

        // ovsdb-tool compacts our file and we read its result.
        tool_ok(&["compact", dbs]);
        let (_log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1]["QoS"][uuid]["type"], "x");
    }

    #[test]
    fn torn_and_corrupt_tails() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("torn");
        let schema = vswitch_schema();
        let u = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"];
        let good = [schema.clone(), insert_record(u[0], "one"), insert_record(u[1], "two")];
        let lens: Vec<u64> = good.iter().map(|r| encode_record(r).len() as u64).collect();
        let two = lens[0] + lens[1];
        let full = two + lens[2];

        // (name, damage, kind, records kept)
        type Damage = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Damage, ReadErrorKind, usize)> = vec![
            (
                "mid-body",
                Box::new(move |p| File::options().write(true).open(p).unwrap().set_len(full - 10).unwrap()),
                ReadErrorKind::Truncated,
                2,
            ),
            (
                "mid-header",
                Box::new(move |p| File::options().write(true).open(p).unwrap().set_len(two + 20).unwrap()),
                ReadErrorKind::BadHeader,
                2,
            ),
            (
                "garbage",
                Box::new(|p| {
                    let mut f = File::options().append(true).open(p).unwrap();
                    f.write_all(b"garbage\x00\xff more\n").unwrap();
                }),
                ReadErrorKind::BadHeader,
                3,
            ),
            (
                "garbage-header",
                Box::new(|p| {
                    let mut f = File::options().append(true).open(p).unwrap();
                    f.write_all(b"OVSDB JSON 999999 0123456789012345678901234567890123456789\n{\"x\":").unwrap();
                }),
                ReadErrorKind::Truncated,
                3,
            ),
            (
                "bad-hash",
                Box::new(move |p| {
                    // Flip a byte inside the middle record's body.
                    let f = File::options().write(true).open(p).unwrap();
                    f.write_all_at(b"Z", two - 5).unwrap();
                }),
                ReadErrorKind::BadHash,
                1,
            ),
        ];
        for (name, damage, kind, kept) in cases {
            let db = dir.path(&format!("{name}.db"));
            write_db(&db, &good);
            damage(&db);
            let size = fs::metadata(&db).unwrap().len();

            let (mut log, read) = Log::open(&db, OpenMode::ReadWrite).unwrap();
            assert_eq!(read, good[..kept].to_vec(), "{name}");
            let err = log.read_error().unwrap_or_else(|| panic!("{name}: no read error")).clone();
            assert_eq!(err.kind, kind, "{name}: {err}");
            let good_len: u64 = lens[..kept].iter().sum();
            assert_eq!(err.offset, good_len, "{name}");
            assert_eq!(err.discarded, size - good_len, "{name}");
            assert!(err.message.contains(&format!("offset {}", err.offset)) || kind != ReadErrorKind::BadHeader);
            assert_eq!(log.offset(), good_len);
            // Nothing is cut until the first write.
            assert_eq!(fs::metadata(&db).unwrap().len(), size, "{name}");

            let u3 = "33333333-3333-4333-8333-333333333333";
            log.append(&insert_record(u3, "three")).unwrap();
            log.commit().unwrap();
            assert!(log.read_error().is_none());
            assert_eq!(fs::metadata(&db).unwrap().len(), log.offset(), "{name}");
            drop(log);

            let (_log, reread) = Log::open(&db, OpenMode::ReadOnly).unwrap();
            assert_eq!(reread.len(), kept + 1, "{name}");
            let out = select_all(&db);
            assert!(out.contains(u3) && out.contains("three"), "{name}: {out}");
            assert_eq!(out.contains(u[1]), kept >= 3, "{name}: {out}");
        }
    }

    #[test]
    fn ovsdb_tool_rejects_torn_file_like_ours_reports() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("msg");
        let db = dir.path("m.db");
        write_db(&db, &[vswitch_schema(), insert_record("44444444-4444-4444-8444-444444444444", "v")]);
        let size = fs::metadata(&db).unwrap().len();
        File::options().write(true).open(&db).unwrap().set_len(size - 10).unwrap();
        let out = tool(&["show-log", db.to_str().unwrap()]);
        assert!(!out.status.success());
        let theirs = String::from_utf8_lossy(&out.stderr).to_string();
        let (log, _) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        let ours = log.read_error().unwrap().message.clone();
        // Same wording after the file name, e.g. "error reading N bytes
        // starting at offset M (End of file)".
        let tail = ours.split_once(": ").unwrap().1;
        assert!(theirs.contains(tail), "ours: {ours}\ntheirs: {theirs}");
    }

    #[test]
    fn first_header_and_clustered() {
        let dir = TempDir::new("magic");
        let junk = dir.path("junk.db");
        fs::write(&junk, b"this is not a log\n").unwrap();
        let err = Log::open(&junk, OpenMode::ReadOnly).unwrap_err();
        assert!(matches!(err, LogError::BadFormat { .. }), "{err}");

        let other = dir.path("other.db");
        let body = b"{}\n";
        let mut bytes = record_header("RAFT2", body).into_bytes();
        bytes.extend_from_slice(body);
        fs::write(&other, &bytes).unwrap();
        assert!(matches!(Log::open(&other, OpenMode::ReadOnly), Err(LogError::UnknownMagic { .. })));

        let fake = dir.path("fake-cluster.db");
        let mut bytes = record_header(CLUSTER_MAGIC, body).into_bytes();
        bytes.extend_from_slice(body);
        fs::write(&fake, &bytes).unwrap();
        for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
            let err = Log::open(&fake, mode).unwrap_err();
            assert!(err.to_string().contains("clustered databases are not supported"), "{err}");
        }

        if have_ovs() {
            let real = dir.path("cluster.db");
            tool_ok(&["create-cluster", real.to_str().unwrap(), VSWITCH_SCHEMA, "unix:/nonexistent/oxvs.sock"]);
            let err = Log::open(&real, OpenMode::ReadWrite).unwrap_err();
            assert!(matches!(err, LogError::Clustered { .. }), "{err}");
            assert_eq!(err.to_string(), format!("{}: clustered databases are not supported", real.display()));
        }
    }

    #[test]
    fn locking_against_ovsdb_tool() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("lock");
        let db = dir.path("l.db");
        let dbs = db.to_str().unwrap();
        write_db(&db, &[vswitch_schema()]);

        let (log, _) = Log::open(&db, OpenMode::ReadWrite).unwrap();
        let out = tool(&["compact", dbs]);
        assert!(!out.status.success(), "ovsdb-tool compact succeeded while we hold the lock");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("failed to lock lockfile"), "{stderr}");
        assert!(stderr.contains(&format!("locked by pid {}", std::process::id())), "{stderr}");
        // Readers need no lock.
        tool_ok(&["show-log", dbs]);
        let (_ro, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read.len(), 1);
        // Nor can this process lock it twice.
        let err = Log::open(&db, OpenMode::ReadWrite).unwrap_err();
        assert!(matches!(err, LogError::LockedBySelf { .. }), "{err}");
        // Through a symlink, too: the lock file is beside the real file.
        let link = dir.path("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        assert_eq!(lockfile_name(&link), lockfile_name(&db));
        assert!(Log::open(&link, OpenMode::ReadWrite).unwrap_err().is_locked());
        drop(log);
        // Released on drop.
        tool_ok(&["compact", dbs]);
        let (log, _) = Log::open(&link, OpenMode::ReadWrite).unwrap();
        drop(log);

        // And the other way round: ovsdb-server holds it, we are refused.
        let sock = dir.path("db.sock");
        let mut server = Command::new("ovsdb-server")
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}", dir.path("ctl").display()))
            .arg("--no-chdir")
            .arg(dbs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ovsdb-server");
        // Once it listens, it has the lock (it locks before it reads).
        for _ in 0..200 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let refused = Log::open(&db, OpenMode::ReadWrite).err();
        let _ = server.kill();
        let _ = server.wait();
        let err = refused.expect("opened a file that ovsdb-server holds");
        match &err {
            LogError::Locked { pid, .. } => assert_eq!(*pid, Some(server.id() as i32), "{err}"),
            _ => panic!("{err}"),
        }
        assert!(err.to_string().contains("failed to lock lockfile"), "{err}");
        Log::open(&db, OpenMode::ReadWrite).unwrap();
    }

    #[test]
    fn replace_compacts_and_keeps_lock() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("replace");
        let db = dir.path("r.db");
        let dbs = db.to_str().unwrap();
        let schema = vswitch_schema();
        let u = "55555555-5555-4555-8555-555555555555";
        let (mut log, _) = Log::open(&db, OpenMode::CreateExcl).unwrap();
        log.append(&schema).unwrap();
        for i in 0..20 {
            log.append(&insert_record(&format!("55555555-5555-4555-8555-{i:012}"), &format!("v{i}"))).unwrap();
        }
        log.commit().unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
        let before = log.offset();
        assert_eq!(log.n_records(), 21);

        let mut snapshot_tables = Map::new();
        snapshot_tables.insert("QoS".into(), json!({ u: { "type": "snap" } }));
        let snapshot = txn_record(snapshot_tables, Some("compacting database online"), false, now_ms());
        log.replace(&[schema.clone(), snapshot.clone()]).unwrap();
        assert!(log.offset() < before);
        assert_eq!(log.offset(), fs::metadata(&db).unwrap().len());
        assert_eq!(log.base_offset(), log.offset());
        assert_eq!(log.n_records(), 2);
        assert_eq!(log.records_since_compaction(), 0);
        assert!(!dir.path("r.db.tmp").exists());
        assert_eq!(fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o640);

        // The lock survived the rename.
        let out = tool(&["compact", dbs]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("failed to lock lockfile"));
        assert!(Log::open(&db, OpenMode::ReadWrite).unwrap_err().is_locked());

        // They read it; appends go to the new file.
        let out = select_all(&db);
        assert!(out.contains(u) && out.contains("snap") && !out.contains("v19"), "{out}");
        let u2 = "66666666-6666-4666-8666-666666666666";
        log.append(&insert_record(u2, "after")).unwrap();
        log.commit().unwrap();
        assert_eq!(log.records_since_compaction(), 1);
        let out = select_all(&db);
        assert!(out.contains(u2) && out.contains("after"), "{out}");
        drop(log);
        let (_log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[1], snapshot);

        // Replacing through a symlink replaces the file it names.
        let link = dir.path("rl.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let (mut log, _) = Log::open(&link, OpenMode::ReadWrite).unwrap();
        log.replace(&[schema]).unwrap();
        drop(log);
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(tool_ok(&["db-name", link.to_str().unwrap()]).trim(), "Open_vSwitch");
        let (_log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read.len(), 1);
    }

    #[test]
    fn online_rewrite_keeps_appends_made_meanwhile() {
        if !have_ovs() {
            return;
        }
        let dir = TempDir::new("rewrite");
        let db = dir.path("w.db");
        let schema = vswitch_schema();
        let (mut log, _) = Log::open(&db, OpenMode::CreateExcl).unwrap();
        log.append(&schema).unwrap();
        for i in 0..10 {
            log.append(&insert_record(&format!("77777777-7777-4777-8777-{i:012}"), &format!("old{i}"))).unwrap();
        }
        log.commit().unwrap();

        let mut rw = log.start_rewrite().unwrap();
        assert!(log.rewrite_in_progress());
        assert!(matches!(log.start_rewrite(), Err(LogError::RewriteInProgress { .. })));
        let snap_u = "88888888-8888-4888-8888-888888888888";
        let mut tables = Map::new();
        tables.insert("QoS".into(), json!({ snap_u: { "type": "snap" } }));
        let snapshot = txn_record(tables, Some("compacting database online"), false, now_ms());
        // The snapshot is written on another thread while the log takes a
        // commit, which must survive into the new file.
        let records = vec![schema.clone(), snapshot.clone()];
        let worker = std::thread::spawn(move || rw.write(&records).map(|()| rw));
        let during = "99999999-9999-4999-8999-999999999999";
        log.append(&insert_record(during, "during")).unwrap();
        log.commit().unwrap();
        let rw = worker.join().unwrap().unwrap();
        log.finish_rewrite(rw).unwrap();
        assert!(!log.rewrite_in_progress());
        assert!(!dir.path("w.db.tmp").exists());
        assert_eq!(log.n_records(), 3);
        assert_eq!(log.records_since_compaction(), 1);
        assert_eq!(log.offset(), fs::metadata(&db).unwrap().len());

        let after = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
        log.append(&insert_record(after, "after")).unwrap();
        log.commit().unwrap();
        let out = select_all(&db);
        assert!(out.contains("snap") && out.contains("during") && out.contains("after"), "{out}");
        assert!(!out.contains("old3"), "{out}");
        drop(log);
        let (mut log, read) = Log::open(&db, OpenMode::ReadWrite).unwrap();
        assert_eq!(read.len(), 4);
        assert_eq!(read[1], snapshot);

        // An abandoned rewrite leaves the log as it was.
        let mut rw = log.start_rewrite().unwrap();
        rw.write(std::slice::from_ref(&schema)).unwrap();
        log.abort_rewrite(rw);
        assert!(!dir.path("w.db.tmp").exists());
        log.append(&insert_record("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "more")).unwrap();
        log.commit().unwrap();
        assert_eq!(log.n_records(), 5);
        assert!(select_all(&db).contains("more"));
        // A cancelled rewrite can't finish, and doesn't stop the next one.
        let mut rw = log.start_rewrite().unwrap();
        log.cancel_rewrite();
        rw.write(std::slice::from_ref(&schema)).unwrap();
        log.replace(&[schema.clone(), snapshot.clone()]).unwrap();
        assert!(matches!(log.finish_rewrite(rw), Err(LogError::RewriteCancelled { .. })));
        assert_eq!(log.n_records(), 2);
        drop(log);
        let (_log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1], snapshot);
    }

    #[test]
    fn grew_lots_thresholds() {
        let dir = TempDir::new("grew");
        let db = dir.path("g.db");
        let (mut log, _) = Log::open(&db, OpenMode::CreateExcl).unwrap();
        let big = json!({"pad": "x".repeat(1024 * 1024)});
        log.append(&json!({"name": "s"})).unwrap();
        log.replace(&[json!({"name": "s"}), big.clone()]).unwrap();
        let base = log.base_offset();
        for _ in 0..9 {
            log.append(&big).unwrap();
        }
        assert!(log.offset() > COMPACT_MIN_LOG_SIZE - 2 * 1024 * 1024);
        assert_eq!(log.grew_lots(), log.offset() > COMPACT_MIN_LOG_SIZE && log.offset() / 2 > base);
        while !log.grew_lots() {
            log.append(&big).unwrap();
        }
        assert!(log.offset() > COMPACT_MIN_LOG_SIZE);
        log.commit().unwrap();
        let n = log.records_since_compaction();
        assert!(n >= 9);
        drop(log);
        let (log, read) = Log::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(read.len(), 2 + n);
        assert_eq!(log.base_offset(), base);
        assert!(log.grew_lots());
    }

    #[test]
    fn annotations() {
        let mut m = Map::new();
        m.insert("T".into(), json!({}));
        annotate_txn(&mut m, Some("c"), true, 42);
        assert_eq!(Value::Object(m.clone()), json!({"T": {}, "_comment": "c", "_is_diff": true, "_date": 42}));
        assert_eq!(txn_meta(&m), TxnMeta { date_ms: Some(42), comment: Some("c".into()), is_diff: true });
        let r = txn_record(Map::new(), None, false, 7);
        assert_eq!(r, json!({"_date": 7}));
        assert!(now_ms() > 1_600_000_000_000);
        assert!(is_annotation("_date") && !is_annotation("Bridge"));
    }
}
