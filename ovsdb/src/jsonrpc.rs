//! JSON-RPC 1.0 as OVSDB speaks it (RFC 7047 §4), following Open vSwitch's
//! `lib/jsonrpc.c` and `lib/json.c`.
//!
//! * [`Message`]: the four message kinds, parsed with the same shape rules and
//!   error texts as `jsonrpc_msg_from_json()` and serialized compactly with the
//!   members in the order `jsonrpc_msg_to_json()` creates them.
//! * [`Framer`]: splits a byte stream into JSON values. OVS uses a streaming
//!   JSON parser: values are simply concatenated, optionally separated by
//!   whitespace, with no length prefix and no newline. The framer scans bytes
//!   once (depth, string and escape state), enforces a maximum message size
//!   (it never buffers more than that) and OVS's maximum nesting depth, and
//!   then parses each complete value with `serde_json`.
//! * [`Connection`], [`MessageReader`]: async receive/send over any tokio
//!   stream. [`OutgoingQueue`] with its [`WriterTask`]: a send queue bounded
//!   the way OVS bounds a `struct jsonrpc`'s backlog, so a peer that does not
//!   read cannot make us buffer without limit.
//!
//! Any error returned while receiving is fatal to the connection, as in OVS
//! (which sets the connection status to `EPROTO` and closes the stream): the
//! caller should drop the session.
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;

/// Default largest message we accept (bytes of one JSON value, whitespace
/// between messages not counted). OVS itself has no limit; this one keeps a
/// hostile or broken peer from making us buffer without bound.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Deepest nesting of arrays/objects accepted: `JSON_MAX_HEIGHT` in OVS's
/// `lib/json.c`. A value nested exactly this deep is fine; one more level is
/// "input exceeds maximum nesting depth 1000".
pub const MAX_NESTING_DEPTH: usize = 1000;

/// OVS only checks the send backlog limits once at least this many messages
/// are queued (`jsonrpc_send()`: `if (rpc->output_count >= 50)`).
pub const BACKLOG_CHECK_MIN_MSGS: usize = 50;

/// Default maximum number of queued messages: OVS's only built-in backlog
/// threshold (`DEFAULT_MAX_BACKLOG_N_MSGS` for RAFT connections in
/// `ovsdb/raft.c`; ovsdb-server's client sessions are unlimited and rely on
/// flow control instead, see [`OutgoingQueue`]).
pub const DEFAULT_BACKLOG_MAX_MSGS: usize = 500;

/// Default maximum number of queued bytes (our choice; RAFT uses UINT32_MAX).
pub const DEFAULT_BACKLOG_MAX_BYTES: usize = 64 * 1024 * 1024;

/// `serde_json` refuses values nested 128 deep or more (its recursion limit);
/// deeper values, allowed up to [`MAX_NESTING_DEPTH`], go through our own
/// iterative parser.
const SERDE_MAX_DEPTH: usize = 127;

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

/// After a message this large, the framer gives its buffer back rather than
/// keeping the capacity for the next one.
const KEEP_BUFFER_CAPACITY: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// A JSON-RPC 1.0 message.
///
/// Parsed messages satisfy OVS's rules: `params` is an array, `id`, `result`
/// and `error` are not null. When building messages to send, keep to the same
/// rules (see [`Message::validate`]): in particular OVS cannot receive a
/// `Response` whose result is `null` (it reads it as a request without a
/// method and drops the connection).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `{"method": M, "params": [...], "id": ID}` with a non-null id.
    Request { method: String, params: Value, id: Value },
    /// `{"method": M, "params": [...], "id": null}`.
    Notification { method: String, params: Value },
    /// A successful reply: `{"result": R, "error": null, "id": ID}`.
    Response { result: Value, id: Value },
    /// An error reply: `{"result": null, "error": E, "id": ID}`.
    Error { error: Value, id: Value },
}

impl Message {
    pub fn request(method: impl Into<String>, params: Vec<Value>, id: Value) -> Message {
        Message::Request { method: method.into(), params: Value::Array(params), id }
    }

    pub fn notification(method: impl Into<String>, params: Vec<Value>) -> Message {
        Message::Notification { method: method.into(), params: Value::Array(params) }
    }

    pub fn response(result: Value, id: Value) -> Message {
        Message::Response { result, id }
    }

    pub fn error(error: Value, id: Value) -> Message {
        Message::Error { error, id }
    }

    /// The inactivity probe OVS's `jsonrpc_session_run()` sends:
    /// `{"method":"echo","params":[],"id":"echo"}`.
    pub fn echo_request() -> Message {
        Message::request("echo", Vec::new(), Value::String("echo".into()))
    }

    /// For an `echo` request, the reply OVS's `jsonrpc_session_recv()` sends
    /// back automatically: the request's params as result, same id.
    pub fn echo_reply(&self) -> Option<Message> {
        match self {
            Message::Request { method, params, id } if method == "echo" => {
                Some(Message::Response { result: params.clone(), id: id.clone() })
            }
            _ => None,
        }
    }

    /// Whether this is the reply to our [`echo_request`](Self::echo_request)
    /// (a reply whose id is the string `"echo"`), which OVS swallows.
    pub fn is_echo_reply(&self) -> bool {
        matches!(self, Message::Response { id: Value::String(s), .. } if s == "echo")
    }

    /// OVS's name for the message type (`jsonrpc_msg_type_to_string()`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Request { .. } => "request",
            Message::Notification { .. } => "notification",
            Message::Response { .. } => "reply",
            Message::Error { .. } => "error",
        }
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            _ => None,
        }
    }

    pub fn id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } | Message::Error { id, .. } => Some(id),
            Message::Notification { .. } => None,
        }
    }

    /// Interprets a JSON value as a message, exactly like OVS's
    /// `jsonrpc_msg_from_json()`: on failure, returns OVS's error text (e.g.
    /// `message is not a JSON object`, `request must have "params"`).
    ///
    /// Rules: the value must be an object; `method`, if present, must be a
    /// string; members `params`, `result`, `error` and `id` that are `null`
    /// count as absent; no other member may be present. The type is: reply
    /// if there is a result, else error if there is an error, else request if
    /// there is an id, else notification. Then `params` (if present) must be
    /// an array, and requests need method, params and id; notifications
    /// method and params (no id); replies result and id; errors error and id;
    /// and no message may have a member its type does not take.
    pub fn from_json(json: Value) -> Result<Message, String> {
        let Value::Object(mut object) = json else {
            return Err("message is not a JSON object".into());
        };
        let method = match object.remove("method") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err("method is not a JSON string".into()),
        };
        let mut take = |name: &str| object.remove(name).filter(|v| !v.is_null());
        let params = take("params");
        let result = take("result");
        let error = take("error");
        let id = take("id");
        if let Some(name) = object.keys().next() {
            return Err(format!("message has unexpected member \"{name}\""));
        }
        if params.as_ref().is_some_and(|p| !p.is_array()) {
            return Err("\"params\" must be JSON array".into());
        }

        // Which members each type must have: method, params, result, error, id.
        let (type_name, pattern) = if result.is_some() {
            ("reply", [false, false, true, false, true])
        } else if error.is_some() {
            ("error", [false, false, false, true, true])
        } else if id.is_some() {
            ("request", [true, true, false, false, true])
        } else {
            ("notification", [true, true, false, false, false])
        };
        let present = [method.is_some(), params.is_some(), result.is_some(), error.is_some(), id.is_some()];
        let names = ["method", "params", "result", "error", "id"];
        for i in 0..5 {
            if present[i] != pattern[i] {
                let must = if pattern[i] { "must" } else { "must not" };
                return Err(format!("{type_name} {must} have \"{}\"", names[i]));
            }
        }

        Ok(match (method, params, result, error, id) {
            (Some(method), Some(params), None, None, Some(id)) => Message::Request { method, params, id },
            (Some(method), Some(params), None, None, None) => Message::Notification { method, params },
            (None, None, Some(result), None, Some(id)) => Message::Response { result, id },
            (None, None, None, Some(error), Some(id)) => Message::Error { error, id },
            _ => unreachable!("checked against the pattern above"),
        })
    }

    /// Checks that OVS would accept this message when it receives it
    /// (`jsonrpc_msg_from_json()` applied to what we would send); returns
    /// OVS's error text otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let params_ok = |p: &Value| {
            if p.is_array() { Ok(()) } else { Err("\"params\" must be JSON array".to_string()) }
        };
        match self {
            Message::Request { params, id, .. } => {
                params_ok(params)?;
                if id.is_null() {
                    // Would be read as a notification, which is valid, but not
                    // what the sender meant.
                    return Err("request must have \"id\"".into());
                }
            }
            Message::Notification { params, .. } => params_ok(params)?,
            Message::Response { result, id } => {
                if result.is_null() {
                    // {"result":null,"error":null,"id":X} reads as a request.
                    return Err("request must have \"method\"".into());
                }
                if id.is_null() {
                    return Err("reply must have \"id\"".into());
                }
            }
            Message::Error { error, id } => {
                if error.is_null() {
                    return Err(if id.is_null() {
                        "notification must have \"method\"".into()
                    } else {
                        "request must have \"method\"".into()
                    });
                }
                if id.is_null() {
                    return Err("error must have \"id\"".into());
                }
            }
        }
        Ok(())
    }

    /// The message as a JSON object (for logging or tests; note that
    /// `serde_json::Map` sorts members, unlike [`to_bytes`](Self::to_bytes)).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        match self {
            Message::Request { method, params, id } => {
                m.insert("method".into(), Value::String(method.clone()));
                m.insert("params".into(), params.clone());
                m.insert("id".into(), id.clone());
            }
            Message::Notification { method, params } => {
                m.insert("method".into(), Value::String(method.clone()));
                m.insert("params".into(), params.clone());
                m.insert("id".into(), Value::Null);
            }
            Message::Response { result, id } => {
                m.insert("result".into(), result.clone());
                m.insert("error".into(), Value::Null);
                m.insert("id".into(), id.clone());
            }
            Message::Error { error, id } => {
                m.insert("result".into(), Value::Null);
                m.insert("error".into(), error.clone());
                m.insert("id".into(), id.clone());
            }
        }
        Value::Object(m)
    }

    /// Serializes the message as it goes on the wire: compact JSON, no
    /// trailing newline (OVS's `jsonrpc_send()` writes `json_to_ds(json, 0)`
    /// and nothing else), members in `jsonrpc_msg_to_json()`'s order: method,
    /// params, result, error, id. Notifications carry `"id":null`, replies
    /// `"error":null` and error replies `"result":null`, as OVS (C and
    /// Python) write them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Appends [`to_bytes`](Self::to_bytes)'s output to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        fn member(out: &mut Vec<u8>, first: bool, name: &str, v: &Value) {
            out.push(if first { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            serde_json::to_writer(&mut *out, v).expect("serializing a serde_json::Value into a Vec cannot fail");
        }
        fn method_member(out: &mut Vec<u8>, method: &str) {
            out.extend_from_slice(b"{\"method\":");
            serde_json::to_writer(&mut *out, method).expect("serializing a str into a Vec cannot fail");
        }
        match self {
            Message::Request { method, params, id } => {
                method_member(out, method);
                member(out, false, "params", params);
                member(out, false, "id", id);
            }
            Message::Notification { method, params } => {
                method_member(out, method);
                member(out, false, "params", params);
                member(out, false, "id", &Value::Null);
            }
            Message::Response { result, id } => {
                member(out, true, "result", result);
                member(out, false, "error", &Value::Null);
                member(out, false, "id", id);
            }
            Message::Error { error, id } => {
                member(out, true, "result", &Value::Null);
                member(out, false, "error", error);
                member(out, false, "id", id);
            }
        }
        out.push(b'}');
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Where a framing error happened, counted like OVS's JSON parser: from the
/// first byte after the previous message, lines and columns from 0, at the
/// offending byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub line: u64,
    pub column: u64,
    pub byte: u64,
    pub kind: FrameErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// The value grew past the configured maximum message size.
    TooLarge { limit: usize },
    /// Nesting deeper than the configured maximum depth.
    TooDeep { limit: usize },
    /// A message must start with `{` or `[` (OVS: "syntax error at beginning
    /// of input"); found another JSON token.
    SyntaxAtStart,
    /// A byte that cannot appear there in JSON.
    InvalidChar(u8),
    /// A control character inside a string.
    UnescapedControl(u8),
    /// `\u0000` in a string: OVS's strings are C strings, so its parser
    /// refuses it ("null bytes not supported in quoted strings"); we refuse it
    /// too, so that such a string cannot reach OVS clients.
    NulEscape,
    /// The complete value is not valid JSON (the parser's message).
    Syntax(String),
    /// End of stream in the middle of a value.
    UnexpectedEof { in_string: bool },
}

impl fmt::Display for FrameErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameErrorKind::TooLarge { limit } => write!(f, "input exceeds maximum message size {limit} bytes"),
            FrameErrorKind::TooDeep { limit } => write!(f, "input exceeds maximum nesting depth {limit}"),
            FrameErrorKind::SyntaxAtStart => write!(f, "syntax error at beginning of input"),
            FrameErrorKind::InvalidChar(c) if (0x20..0x7f).contains(c) => {
                write!(f, "invalid character '{}'", *c as char)
            }
            FrameErrorKind::InvalidChar(c) => write!(f, "invalid character U+{c:04x}"),
            FrameErrorKind::UnescapedControl(c) => write!(f, "U+{c:04X} must be escaped in quoted string"),
            FrameErrorKind::NulEscape => write!(f, "null bytes not supported in quoted strings"),
            FrameErrorKind::Syntax(s) => write!(f, "{s}"),
            FrameErrorKind::UnexpectedEof { in_string: true } => {
                write!(f, "unexpected end of input in quoted string")
            }
            FrameErrorKind::UnexpectedEof { in_string: false } => write!(f, "unexpected end of input"),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}, byte {}: {}", self.line, self.column, self.byte, self.kind)
    }
}

impl std::error::Error for FrameError {}

/// Errors of a JSON-RPC connection. All are fatal to the connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JsonRpcError {
    #[error("{0}")]
    Io(Arc<io::Error>),
    /// The byte stream is not a sequence of acceptable JSON values (OVS logs
    /// "error parsing stream: ...").
    #[error("error parsing stream: {0}")]
    Parse(FrameError),
    /// A JSON value that is not a valid JSON-RPC message (OVS logs "received
    /// bad JSON-RPC message: ...").
    #[error("received bad JSON-RPC message: {0}")]
    BadMessage(String),
    /// Too many messages queued for sending (OVS: E2BIG).
    #[error("sending backlog exceeded maximum number of messages ({count} > {max})")]
    BacklogMessages { count: usize, max: usize },
    /// Too many bytes queued for sending (OVS: E2BIG).
    #[error("sending backlog exceeded maximum size ({bytes} > {max} bytes)")]
    BacklogBytes { bytes: usize, max: usize },
    /// The connection (or its writer) has been closed.
    #[error("connection closed")]
    Closed,
}

impl From<io::Error> for JsonRpcError {
    fn from(e: io::Error) -> Self {
        JsonRpcError::Io(Arc::new(e))
    }
}

impl From<FrameError> for JsonRpcError {
    fn from(e: FrameError) -> Self {
        JsonRpcError::Parse(e)
    }
}

impl JsonRpcError {
    /// Whether this is a send-backlog overflow.
    pub fn is_backlog_exceeded(&self) -> bool {
        matches!(self, JsonRpcError::BacklogMessages { .. } | JsonRpcError::BacklogBytes { .. })
    }
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Limits applied to incoming messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvLimits {
    /// Largest JSON value accepted, in bytes.
    pub max_message_size: usize,
    /// Deepest nesting accepted.
    pub max_depth: usize,
}

impl Default for RecvLimits {
    fn default() -> Self {
        RecvLimits { max_message_size: DEFAULT_MAX_MESSAGE_SIZE, max_depth: MAX_NESTING_DEPTH }
    }
}

/// Incremental splitter of a byte stream into top-level JSON values.
///
/// Feed it bytes as they arrive; each byte is scanned once. Whitespace (space,
/// tab, CR, LF) between values is skipped and not buffered. A value must
/// start with `{` or `[` (OVS's parser accepts nothing else at top level).
/// While inside a value the framer tracks nesting depth and string/escape
/// state and rejects early what can never be valid (control characters in
/// strings, bytes that cannot appear outside strings, nesting beyond the
/// limit, size beyond the limit), so it never holds more than
/// `max_message_size` bytes. Once the closing bracket arrives the value is
/// parsed. After an error the framer stays failed.
#[derive(Debug)]
pub struct Framer {
    limits: RecvLimits,
    /// Bytes of the current, incomplete value, from its opening bracket.
    buf: Vec<u8>,
    in_value: bool,
    depth: usize,
    max_depth_seen: usize,
    in_string: bool,
    escape: bool,
    /// Hex digits of a `\u` escape still to come, and whether all so far
    /// were `0`.
    hex_left: u8,
    hex_zero: bool,
    /// Position (line, column, byte) of the value's first byte, counted from
    /// the end of the previous message.
    lead_line: u64,
    lead_column: u64,
    lead_bytes: u64,
    error: Option<FrameError>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

impl Framer {
    pub fn new() -> Framer {
        Framer::with_limits(RecvLimits::default())
    }

    pub fn with_limits(limits: RecvLimits) -> Framer {
        Framer {
            limits,
            buf: Vec::new(),
            in_value: false,
            depth: 0,
            max_depth_seen: 0,
            in_string: false,
            escape: false,
            hex_left: 0,
            hex_zero: false,
            lead_line: 0,
            lead_column: 0,
            lead_bytes: 0,
            error: None,
        }
    }

    pub fn limits(&self) -> RecvLimits {
        self.limits
    }

    /// Bytes of an incomplete value currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Capacity of the internal buffer (never more than the maximum message
    /// size).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether no value is in progress (only whitespace seen since the last
    /// complete value) and no error happened.
    pub fn is_idle(&self) -> bool {
        !self.in_value && self.error.is_none()
    }

    /// The error the framer failed with, if any.
    pub fn error(&self) -> Option<&FrameError> {
        self.error.as_ref()
    }

    /// Consumes bytes from `data` up to the end of the next complete value.
    ///
    /// Returns how many bytes were consumed and the value, if one was
    /// completed; bytes after the value are not consumed and must be fed
    /// again. If no value completes, all of `data` is consumed (and the
    /// partial value buffered). Errors are sticky.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Value>), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut i = 0;
        if !self.in_value {
            while i < data.len() {
                match data[i] {
                    b' ' | b'\t' | b'\r' => self.lead_column += 1,
                    b'\n' => {
                        self.lead_line += 1;
                        self.lead_column = 0;
                    }
                    b'{' | b'[' => break,
                    c => {
                        let kind = match c {
                            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'"' | b']' | b'}' | b':' | b',' => {
                                FrameErrorKind::SyntaxAtStart
                            }
                            _ => FrameErrorKind::InvalidChar(c),
                        };
                        let e =
                            FrameError { line: self.lead_line, column: self.lead_column, byte: self.lead_bytes, kind };
                        return Err(self.fail(e));
                    }
                }
                self.lead_bytes += 1;
                i += 1;
            }
            if i == data.len() {
                return Ok((i, None));
            }
            self.in_value = true;
            self.depth = 0;
            self.max_depth_seen = 0;
            self.in_string = false;
            self.escape = false;
            self.hex_left = 0;
        }

        let start = i;
        let room = self.limits.max_message_size - self.buf.len();
        let window_end = data.len().min(start.saturating_add(room));
        while i < window_end {
            let c = data[i];
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    if c == b'u' {
                        self.hex_left = 4;
                        self.hex_zero = true;
                    }
                    i += 1;
                    continue;
                }
                if self.hex_left > 0 {
                    // Only watching for \u0000; malformed escapes are left to
                    // the parser.
                    self.hex_left -= 1;
                    self.hex_zero &= c == b'0';
                    if self.hex_left == 0 && self.hex_zero {
                        let e = self.error_at(&data[start..i], FrameErrorKind::NulEscape);
                        return Err(self.fail(e));
                    }
                }
                if c == b'\\' {
                    self.escape = true;
                } else if c == b'"' {
                    self.in_string = false;
                    self.hex_left = 0;
                } else if c < 0x20 {
                    let e = self.error_at(&data[start..i], FrameErrorKind::UnescapedControl(c));
                    return Err(self.fail(e));
                }
            } else {
                match c {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => {
                        self.depth += 1;
                        if self.depth > self.limits.max_depth {
                            let e = self
                                .error_at(&data[start..i], FrameErrorKind::TooDeep { limit: self.limits.max_depth });
                            return Err(self.fail(e));
                        }
                        self.max_depth_seen = self.max_depth_seen.max(self.depth);
                    }
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            i += 1;
                            let value = self.complete(&data[start..i])?;
                            return Ok((i, Some(value)));
                        }
                    }
                    b' ' | b'\t' | b'\r' | b'\n' | b':' | b',' => {}
                    b'0'..=b'9' | b'a'..=b'z' | b'-' | b'+' | b'.' | b'E' => {}
                    _ => {
                        let e = self.error_at(&data[start..i], FrameErrorKind::InvalidChar(c));
                        return Err(self.fail(e));
                    }
                }
            }
            i += 1;
        }
        if window_end < data.len() {
            // The value would grow past the limit: fail without buffering.
            let e = self
                .error_at(&data[start..window_end], FrameErrorKind::TooLarge { limit: self.limits.max_message_size });
            return Err(self.fail(e));
        }
        self.append(&data[start..i]);
        Ok((i, None))
    }

    /// Feeds all of `data`, returning every value completed.
    pub fn feed_all(&mut self, mut data: &[u8]) -> Result<Vec<Value>, FrameError> {
        let mut values = Vec::new();
        while !data.is_empty() {
            let (n, value) = self.feed(data)?;
            values.extend(value);
            data = &data[n..];
        }
        Ok(values)
    }

    /// To call at end of stream: an error if a value is incomplete.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.in_value {
            let e = self.error_at(&[], FrameErrorKind::UnexpectedEof { in_string: self.in_string });
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Appends to the buffer without letting its capacity exceed the limit.
    fn append(&mut self, bytes: &[u8]) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let want = (self.buf.capacity() * 2).max(need).max(256).min(self.limits.max_message_size).max(need);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    fn complete(&mut self, tail: &[u8]) -> Result<Value, FrameError> {
        let parsed = if self.buf.is_empty() {
            parse_json(tail, self.max_depth_seen)
        } else {
            self.append(tail);
            parse_json(&self.buf, self.max_depth_seen)
        };
        match parsed {
            Ok(value) => {
                if self.buf.capacity() > KEEP_BUFFER_CAPACITY {
                    self.buf = Vec::new();
                } else {
                    self.buf.clear();
                }
                self.in_value = false;
                self.lead_line = 0;
                self.lead_column = 0;
                self.lead_bytes = 0;
                Ok(value)
            }
            Err(msg) => {
                let e = FrameError {
                    line: self.lead_line,
                    column: self.lead_column,
                    byte: self.lead_bytes,
                    kind: FrameErrorKind::Syntax(msg),
                };
                Err(self.fail(e))
            }
        }
    }

    /// An error at the byte after the buffered bytes and `extra`.
    fn error_at(&self, extra: &[u8], kind: FrameErrorKind) -> FrameError {
        let (mut line, mut column) = (self.lead_line, self.lead_column);
        for &c in self.buf.iter().chain(extra) {
            if c == b'\n' {
                line += 1;
                column = 0;
            } else {
                column += 1;
            }
        }
        let byte = self.lead_bytes + (self.buf.len() + extra.len()) as u64;
        FrameError { line, column, byte, kind }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.error = Some(e.clone());
        self.buf = Vec::new();
        e
    }
}

/// Parses one complete JSON value.
fn parse_json(bytes: &[u8], depth: usize) -> Result<Value, String> {
    if depth <= SERDE_MAX_DEPTH {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        parse_json_iterative(bytes)
    }
}

/// A JSON parser without recursion (so without serde_json's depth limit),
/// for deeply nested values; strings and numbers are handed to serde_json.
fn parse_json_iterative(s: &[u8]) -> Result<Value, String> {
    enum Frame {
        Array(Vec<Value>),
        Object(Map<String, Value>, String),
    }
    fn skip_ws(s: &[u8], mut i: usize) -> usize {
        while matches!(s.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }
    fn string(s: &[u8], i: usize) -> Result<(String, usize), String> {
        if s.get(i) != Some(&b'"') {
            return Err(format!("expected string at byte {i}"));
        }
        let mut j = i + 1;
        loop {
            match s.get(j) {
                Some(b'\\') => j += 2,
                Some(b'"') => break,
                Some(_) => j += 1,
                None => return Err("EOF while parsing a string".into()),
            }
        }
        let string = serde_json::from_slice::<String>(&s[i..=j]).map_err(|e| format!("{e} (string at byte {i})"))?;
        Ok((string, j + 1))
    }
    fn key(s: &[u8], i: usize) -> Result<(String, usize), String> {
        let (k, i) = string(s, i)?;
        let i = skip_ws(s, i);
        if s.get(i) != Some(&b':') {
            return Err(format!("expected `:` at byte {i}"));
        }
        Ok((k, i + 1))
    }
    fn keyword(s: &[u8], i: usize, word: &str, v: Value) -> Result<(Value, usize), String> {
        if s[i..].starts_with(word.as_bytes()) {
            Ok((v, i + word.len()))
        } else {
            Err(format!("expected value at byte {i}"))
        }
    }

    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    'value: loop {
        i = skip_ws(s, i);
        let (mut v, next) = match s.get(i) {
            Some(b'[') => {
                let j = skip_ws(s, i + 1);
                if s.get(j) == Some(&b']') {
                    (Value::Array(Vec::new()), j + 1)
                } else {
                    stack.push(Frame::Array(Vec::new()));
                    i = j;
                    continue 'value;
                }
            }
            Some(b'{') => {
                let j = skip_ws(s, i + 1);
                if s.get(j) == Some(&b'}') {
                    (Value::Object(Map::new()), j + 1)
                } else {
                    let (k, j) = key(s, j)?;
                    stack.push(Frame::Object(Map::new(), k));
                    i = j;
                    continue 'value;
                }
            }
            Some(b'"') => {
                let (string, j) = string(s, i)?;
                (Value::String(string), j)
            }
            Some(b't') => keyword(s, i, "true", Value::Bool(true))?,
            Some(b'f') => keyword(s, i, "false", Value::Bool(false))?,
            Some(b'n') => keyword(s, i, "null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => {
                let mut j = i;
                while matches!(s.get(j), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                    j += 1;
                }
                let n = serde_json::from_slice::<serde_json::Number>(&s[i..j])
                    .map_err(|e| format!("{e} (number at byte {i})"))?;
                (Value::Number(n), j)
            }
            Some(_) => return Err(format!("expected value at byte {i}")),
            None => return Err("EOF while parsing a value".into()),
        };
        i = next;
        loop {
            i = skip_ws(s, i);
            match stack.last_mut() {
                None => {
                    if i != s.len() {
                        return Err(format!("trailing characters at byte {i}"));
                    }
                    return Ok(v);
                }
                Some(Frame::Array(items)) => {
                    items.push(v);
                    match s.get(i) {
                        Some(b',') => {
                            i += 1;
                            continue 'value;
                        }
                        Some(b']') => {
                            i += 1;
                            let Some(Frame::Array(items)) = stack.pop() else { unreachable!() };
                            v = Value::Array(items);
                        }
                        _ => return Err(format!("expected `,` or `]` at byte {i}")),
                    }
                }
                Some(Frame::Object(map, k)) => {
                    map.insert(std::mem::take(k), v);
                    match s.get(i) {
                        Some(b',') => {
                            let (next_key, j) = key(s, skip_ws(s, i + 1))?;
                            *k = next_key;
                            i = j;
                            continue 'value;
                        }
                        Some(b'}') => {
                            i += 1;
                            let Some(Frame::Object(map, _)) = stack.pop() else { unreachable!() };
                            v = Value::Object(map);
                        }
                        _ => return Err(format!("expected `,` or `}}` at byte {i}")),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------

/// Receives messages from an async byte stream.
#[derive(Debug)]
pub struct MessageReader<R> {
    reader: R,
    framer: Framer,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    received: u64,
    failed: Option<JsonRpcError>,
}

impl<R> MessageReader<R> {
    pub fn new(reader: R) -> Self {
        MessageReader::with_limits(reader, RecvLimits::default())
    }

    pub fn with_limits(reader: R, limits: RecvLimits) -> Self {
        MessageReader {
            reader,
            framer: Framer::with_limits(limits),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            received: 0,
            failed: None,
        }
    }

    /// Total bytes read from the stream. OVS's sessions count any received
    /// byte, not only complete messages, as activity for the inactivity
    /// probe (`jsonrpc_get_received_bytes()`), so a large message arriving
    /// slowly does not time the session out.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Receives the next message: `Ok(None)` when the peer closed the stream
    /// between messages. Any error is fatal (and returned again by later
    /// calls): invalid JSON, a value that breaks the limits, a JSON value that
    /// is not a valid JSON-RPC message, end of stream inside a message (OVS
    /// just reports EOF there), or an I/O error.
    ///
    /// Cancel safe: if the future is dropped before completing, no data is
    /// lost (useful in `tokio::select!`).
    pub async fn recv(&mut self) -> Result<Option<Message>, JsonRpcError> {
        match self.recv_json().await? {
            None => Ok(None),
            Some(json) => match Message::from_json(json) {
                Ok(msg) => Ok(Some(msg)),
                Err(e) => {
                    let e = JsonRpcError::BadMessage(e);
                    self.failed = Some(e.clone());
                    Err(e)
                }
            },
        }
    }

    /// Receives the next top-level JSON value without interpreting it.
    pub async fn recv_json(&mut self) -> Result<Option<Value>, JsonRpcError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            if self.start < self.end {
                match self.framer.feed(&self.buf[self.start..self.end]) {
                    Ok((n, value)) => {
                        self.start += n;
                        if let Some(value) = value {
                            return Ok(Some(value));
                        }
                    }
                    Err(e) => return Err(self.fail(e.into())),
                }
            }
            // The only await point: nothing is consumed if it is cancelled.
            let n = match self.reader.read(&mut self.buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(e.into())),
            };
            self.start = 0;
            self.end = n;
            self.received += n as u64;
            if n == 0 {
                return match self.framer.finish() {
                    Ok(()) => Ok(None),
                    Err(e) => Err(self.fail(e.into())),
                };
            }
        }
    }

    fn fail(&mut self, e: JsonRpcError) -> JsonRpcError {
        self.failed = Some(e.clone());
        e
    }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// A JSON-RPC connection over one bidirectional stream, sending directly.
///
/// For a server, prefer [`Connection::into_queued`], which sends through a
/// bounded queue and a writer task so that a peer that does not read cannot
/// block the session or grow its memory without bound.
#[derive(Debug)]
pub struct Connection<S> {
    rd: MessageReader<S>,
}

impl<S> Connection<S> {
    pub fn new(stream: S) -> Self {
        Connection { rd: MessageReader::new(stream) }
    }

    pub fn with_limits(stream: S, limits: RecvLimits) -> Self {
        Connection { rd: MessageReader::with_limits(stream, limits) }
    }

    pub fn bytes_received(&self) -> u64 {
        self.rd.bytes_received()
    }

    pub fn get_ref(&self) -> &S {
        self.rd.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.rd.get_mut()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// See [`MessageReader::recv`]. Cancel safe.
    pub async fn recv(&mut self) -> Result<Option<Message>, JsonRpcError> {
        self.rd.recv().await
    }

    /// Writes one message (compact JSON, nothing after it) and flushes.
    /// Not cancel safe: a cancelled send may have written part of a message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), JsonRpcError> {
        let bytes = msg.to_bytes();
        self.rd.reader.write_all(&bytes).await?;
        self.rd.reader.flush().await?;
        Ok(())
    }

    /// Splits into a reader (keeping any input already buffered) and the
    /// write half.
    pub fn into_split(self) -> (MessageReader<ReadHalf<S>>, WriteHalf<S>) {
        let Connection { rd } = self;
        let (r, w) = tokio::io::split(rd.reader);
        let reader = MessageReader {
            reader: r,
            framer: rd.framer,
            buf: rd.buf,
            start: rd.start,
            end: rd.end,
            received: rd.received,
            failed: rd.failed,
        };
        (reader, w)
    }

    /// Splits into a reader and a bounded send queue whose [`WriterTask`]
    /// the caller must run (e.g. `tokio::spawn(task.run())`).
    pub fn into_queued(
        self,
        limits: BacklogLimits,
    ) -> (MessageReader<ReadHalf<S>>, OutgoingQueue, WriterTask<WriteHalf<S>>) {
        let (reader, w) = self.into_split();
        let (queue, task) = outgoing_queue(w, limits);
        (reader, queue, task)
    }

    /// [`into_queued`](Self::into_queued) with a queue that writes directly
    /// ([`outgoing_queue_direct`]).
    pub fn into_queued_direct(
        self,
        limits: BacklogLimits,
    ) -> (MessageReader<ReadHalf<S>>, OutgoingQueue, WriterTask<WriteHalf<S>>)
    where
        S: Send + 'static,
    {
        let (reader, w) = self.into_split();
        let (queue, task) = outgoing_queue_direct(w, limits);
        (reader, queue, task)
    }
}

// ---------------------------------------------------------------------------
// Bounded sending
// ---------------------------------------------------------------------------

/// Limits on a connection's send backlog, with OVS's semantics
/// (`jsonrpc_set_backlog_threshold()`): once at least
/// [`BACKLOG_CHECK_MIN_MSGS`] messages are queued, more than `max_msgs`
/// messages or more than `max_bytes` unsent bytes make the connection fail
/// with [`JsonRpcError::BacklogMessages`] / [`JsonRpcError::BacklogBytes`]
/// (OVS: E2BIG, "disconnecting"). 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimits {
    pub max_msgs: usize,
    pub max_bytes: usize,
}

impl BacklogLimits {
    pub const UNLIMITED: BacklogLimits = BacklogLimits { max_msgs: 0, max_bytes: 0 };
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits { max_msgs: DEFAULT_BACKLOG_MAX_MSGS, max_bytes: DEFAULT_BACKLOG_MAX_BYTES }
    }
}

#[derive(Debug)]
struct QueueState {
    queue: VecDeque<Vec<u8>>,
    /// Unsent bytes, including the unsent part of the message being written.
    backlog: usize,
    /// Messages not completely sent, including the one being written.
    count: usize,
    limits: BacklogLimits,
    /// Why the queue stopped, if it did.
    status: Option<JsonRpcError>,
    /// Graceful close requested: send what is queued, then shut down.
    closing: bool,
    handles: usize,
}

/// Writes what it can of a buffer without waiting: the bytes written, 0 if
/// the writer is not ready (or failed: the writer task will find out).
type DirectWrite = Box<dyn Fn(&[u8]) -> usize + Send + Sync>;

struct Shared {
    /// Set for queues made by [`outgoing_queue_direct`].
    direct: Option<DirectWrite>,
    state: Mutex<QueueState>,
    /// New data or close request for the writer.
    wake: Notify,
    /// The queue failed: the writer must stop, even in the middle of a write.
    abort: Notify,
    /// The backlog reached zero or the queue stopped.
    drained: Notify,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("direct", &self.direct.is_some()).field("state", &self.state).finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error the queue stopped with.
    fn stopped(&self) -> JsonRpcError {
        self.lock().status.clone().unwrap_or(JsonRpcError::Closed)
    }

    /// Stops the queue with `e` (unless already stopped), discarding what is
    /// queued, like OVS's `jsonrpc_error()` + `jsonrpc_cleanup()`.
    fn stop(&self, st: &mut QueueState, e: JsonRpcError) {
        if st.status.is_none() {
            st.status = Some(e);
        }
        st.queue.clear();
        st.backlog = 0;
        st.count = 0;
        self.abort.notify_one();
        self.wake.notify_one();
        self.drained.notify_waiters();
    }
}

/// Creates a bounded send queue writing to `writer`. The queue handle is
/// cheap to clone; run the [`WriterTask`] in its own task. When every handle
/// is dropped (or [`OutgoingQueue::close`] is called) the task sends what is
/// queued, shuts the writer down and finishes.
pub fn outgoing_queue<W>(writer: W, limits: BacklogLimits) -> (OutgoingQueue, WriterTask<W>) {
    new_queue(Arc::new(Mutex::new(writer)), limits, None)
}

/// [`outgoing_queue`] whose senders write a message themselves when nothing
/// is queued or being written and the writer takes it whole without
/// waiting (a socket with room in its buffer): no hand-over to the writer
/// task, whose wake-up would cost more than the write. What cannot be
/// written at once is queued for the task as usual, so messages keep their
/// order. `writer` must not buffer (it is not flushed after direct writes).
pub fn outgoing_queue_direct<W: AsyncWrite + Unpin + Send + 'static>(
    writer: W,
    limits: BacklogLimits,
) -> (OutgoingQueue, WriterTask<W>) {
    let writer = Arc::new(Mutex::new(writer));
    let w = writer.clone();
    let direct: DirectWrite = Box::new(move |buf: &[u8]| {
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody is waiting on the writer (nothing is queued), so a waker
        // that does nothing is enough: the writer task polls again with its
        // own if the bytes have to be queued.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut *w).poll_write(&mut cx, buf) {
            std::task::Poll::Ready(Ok(n)) => n,
            _ => 0,
        }
    });
    new_queue(writer, limits, Some(direct))
}

fn new_queue<W>(
    writer: Arc<Mutex<W>>,
    limits: BacklogLimits,
    direct: Option<DirectWrite>,
) -> (OutgoingQueue, WriterTask<W>) {
    let shared = Arc::new(Shared {
        direct,
        state: Mutex::new(QueueState {
            queue: VecDeque::new(),
            backlog: 0,
            count: 0,
            limits,
            status: None,
            closing: false,
            handles: 1,
        }),
        wake: Notify::new(),
        abort: Notify::new(),
        drained: Notify::new(),
    });
    (OutgoingQueue { shared: shared.clone() }, WriterTask { writer, shared })
}

/// Handle to a bounded send queue; see [`outgoing_queue`].
///
/// OVS's ovsdb-server avoids reaching the backlog limits with flow control:
/// while a session has any backlog it neither reads further requests nor
/// sends monitor updates (which keep accumulating and are sent merged once
/// the backlog is empty). [`backlog`](Self::backlog) and
/// [`drained`](Self::drained) let a server do the same.
#[derive(Debug)]
pub struct OutgoingQueue {
    shared: Arc<Shared>,
}

impl Clone for OutgoingQueue {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        OutgoingQueue { shared: self.shared.clone() }
    }
}

impl Drop for OutgoingQueue {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.handles -= 1;
        if st.handles == 0 {
            drop(st);
            self.shared.wake.notify_one();
        }
    }
}

impl OutgoingQueue {
    /// Queues `msg` without waiting. Fails if the queue has stopped (backlog
    /// exceeded, write error, closed); if this message takes the backlog past
    /// the limits, the queue stops (discarding everything queued, and the
    /// writer task drops the connection) and the backlog error is returned.
    pub fn send(&self, msg: &Message) -> Result<(), JsonRpcError> {
        self.send_bytes(msg.to_bytes())
    }

    /// Queues an already serialized message (e.g. one update sent to many
    /// sessions). `bytes` must be exactly one JSON value.
    pub fn send_bytes(&self, bytes: Vec<u8>) -> Result<(), JsonRpcError> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.status {
            return Err(e.clone());
        }
        if st.closing {
            return Err(JsonRpcError::Closed);
        }
        let mut bytes = bytes;
        if let Some(direct) = &self.shared.direct
            && st.count == 0
        {
            // Nothing queued nor being written: try the writer now.
            let n = direct(&bytes);
            if n == bytes.len() {
                return Ok(());
            }
            bytes.drain(..n);
        }
        st.backlog += bytes.len();
        st.count += 1;
        st.queue.push_back(bytes);
        if st.count >= BACKLOG_CHECK_MIN_MSGS {
            let limits = st.limits;
            let error = if limits.max_msgs != 0 && st.count > limits.max_msgs {
                Some(JsonRpcError::BacklogMessages { count: st.count, max: limits.max_msgs })
            } else if limits.max_bytes != 0 && st.backlog > limits.max_bytes {
                Some(JsonRpcError::BacklogBytes { bytes: st.backlog, max: limits.max_bytes })
            } else {
                None
            };
            if let Some(e) = error {
                self.shared.stop(&mut st, e.clone());
                return Err(e);
            }
        }
        drop(st);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Unsent bytes (OVS: `jsonrpc_get_backlog()`); 0 once stopped.
    pub fn backlog(&self) -> usize {
        self.shared.lock().backlog
    }

    /// Messages not completely sent.
    pub fn backlog_msgs(&self) -> usize {
        self.shared.lock().count
    }

    /// Why the queue stopped, if it has.
    pub fn status(&self) -> Option<JsonRpcError> {
        self.shared.lock().status.clone()
    }

    /// Waits until everything queued has been written. Fails if the queue
    /// stops first (a graceful close after everything was written is not
    /// a failure).
    pub async fn drained(&self) -> Result<(), JsonRpcError> {
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                match &st.status {
                    None if st.backlog == 0 => return Ok(()),
                    None => {}
                    Some(JsonRpcError::Closed) if st.backlog == 0 && st.closing => return Ok(()),
                    Some(e) => return Err(e.clone()),
                }
            }
            notified.await;
        }
    }

    /// Graceful close: refuse further messages, let the writer send what is
    /// queued, then shut the stream down.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }

    /// Immediate close: discard what is queued and make the writer stop.
    pub fn abort(&self) {
        let mut st = self.shared.lock();
        self.shared.stop(&mut st, JsonRpcError::Closed);
    }
}

/// The task writing an [`OutgoingQueue`]'s messages; see [`outgoing_queue`].
#[derive(Debug)]
pub struct WriterTask<W> {
    /// Shared with the queue's senders if they write directly; locked only
    /// for each poll.
    writer: Arc<Mutex<W>>,
    shared: Arc<Shared>,
}

impl<W> Drop for WriterTask<W> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.status.is_none() {
            self.shared.stop(&mut st, JsonRpcError::Closed);
        }
    }
}

enum Next {
    Write(Vec<u8>),
    Flush,
    Finish,
    Wait,
}

impl<W: AsyncWrite + Unpin> WriterTask<W> {
    /// Writes queued messages until the queue is closed (then `Ok` after
    /// shutting the writer down) or fails (then the failure: backlog
    /// exceeded, write error, abort). The writer is dropped on return, which
    /// closes the connection if it was its last half.
    pub async fn run(mut self) -> Result<(), JsonRpcError> {
        let result = self.run_inner().await;
        let mut st = self.shared.lock();
        match &result {
            Ok(()) => {
                if st.status.is_none() {
                    st.status = Some(JsonRpcError::Closed);
                }
                self.shared.drained.notify_waiters();
            }
            Err(e) => self.shared.stop(&mut st, e.clone()),
        }
        drop(st);
        result
    }

    fn lock_writer(&self) -> MutexGuard<'_, W> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run_inner(&mut self) -> Result<(), JsonRpcError> {
        let mut need_flush = false;
        loop {
            let next = {
                let mut st = self.shared.lock();
                if let Some(e) = &st.status {
                    return Err(e.clone());
                }
                match st.queue.pop_front() {
                    Some(buf) => Next::Write(buf),
                    None if need_flush => Next::Flush,
                    None if st.closing || st.handles == 0 => Next::Finish,
                    None => Next::Wait,
                }
            };
            match next {
                Next::Write(buf) => {
                    self.write_message(&buf).await?;
                    need_flush = true;
                }
                Next::Flush => {
                    self.flush().await?;
                    need_flush = false;
                }
                Next::Finish => {
                    self.shutdown().await?;
                    return Ok(());
                }
                Next::Wait => self.shared.wake.notified().await,
            }
        }
    }

    async fn write_message(&mut self, buf: &[u8]) -> Result<(), JsonRpcError> {
        let mut off = 0;
        while off < buf.len() {
            let rest = &buf[off..];
            let n = tokio::select! {
                biased;
                _ = self.shared.abort.notified() => return Err(self.shared.stopped()),
                r = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *self.lock_writer()).poll_write(cx, rest)) => match r {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            off += n;
            let mut st = self.shared.lock();
            if st.status.is_some() {
                drop(st);
                return Err(self.shared.stopped());
            }
            st.backlog -= n;
            if off == buf.len() {
                st.count -= 1;
            }
            if st.backlog == 0 {
                self.shared.drained.notify_waiters();
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), JsonRpcError> {
        tokio::select! {
            biased;
            _ = self.shared.abort.notified() => Err(self.shared.stopped()),
            r = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *self.lock_writer()).poll_flush(cx)) => {
                r.map_err(JsonRpcError::from)
            }
        }
    }

    async fn shutdown(&mut self) -> Result<(), JsonRpcError> {
        tokio::select! {
            biased;
            _ = self.shared.abort.notified() => Err(self.shared.stopped()),
            r = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *self.lock_writer()).poll_shutdown(cx)) => {
                r.map_err(JsonRpcError::from)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;
    use tokio::io::duplex;

    /// A stream of messages with the awkward cases: brackets and escaped
    /// quotes inside strings, backslashes before quotes, unicode, numbers at
    /// the edges of containers, and assorted whitespace between messages.
    fn sample_stream() -> (Vec<u8>, Vec<Value>) {
        let texts = [
            r#"{"method":"echo","params":[],"id":"echo"}"#,
            "  \n\t\r\n",
            r#"{"id":1,"method":"transact","params":["Open_vSwitch",{"op":"select","table":"Bridge","where":[["name","==","br}{0]["]]}]}"#,
            r#"{"a":"quote \" brace } bracket ] backslash \\","b":"\\","c":"\\\"}","d":"\u00e9\ud83d\ude00 é 😀","e":[-1.5e3,0,12345678901234567890,true,false,null]}"#,
            "\r\n",
            r#"[1,[2,[3,{"x":{}}]],[]]"#,
            r#"{}"#,
            r#"{"result":{"k":"{[\"]}"},"error":null,"id":7}"#,
            " ",
            r#"{ "method" : "update" , "params" : [ null , { "t" : { "u" : { "new" : { "c" : 1 } } } } ] , "id" : null }"#,
        ];
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        for t in texts {
            bytes.extend_from_slice(t.as_bytes());
            if !t.trim().is_empty() {
                values.push(serde_json::from_str(t).unwrap());
            }
        }
        (bytes, values)
    }

    fn feed_chunks(framer: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<Value>, FrameError> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(framer.feed_all(c)?);
        }
        Ok(out)
    }

    fn frame_err(input: &[u8]) -> FrameError {
        let mut f = Framer::new();
        let r = f.feed_all(input).and_then(|v| f.finish().map(|()| v));
        r.expect_err(&format!("accepted {:?}", String::from_utf8_lossy(input)))
    }

    #[test]
    fn frames_every_two_chunk_split() {
        let (bytes, values) = sample_stream();
        for i in 0..=bytes.len() {
            let mut f = Framer::new();
            let got = feed_chunks(&mut f, &[&bytes[..i], &bytes[i..]]).unwrap();
            assert_eq!(got, values, "split at {i}");
            assert!(f.is_idle());
            f.finish().unwrap();
        }
    }

    #[test]
    fn frames_every_three_chunk_split() {
        let (bytes, values) = sample_stream();
        let n = bytes.len();
        let mut splits = 0;
        for i in 0..=n {
            for j in i..=n {
                let mut f = Framer::new();
                let got = feed_chunks(&mut f, &[&bytes[..i], &bytes[i..j], &bytes[j..]]).unwrap();
                assert_eq!(got, values, "splits at {i}, {j}");
                splits += 1;
            }
        }
        assert_eq!(splits, (n + 1) * (n + 2) / 2);
    }

    #[test]
    fn frames_byte_by_byte_and_at_once() {
        let (bytes, values) = sample_stream();
        let mut f = Framer::new();
        let mut got = Vec::new();
        for b in &bytes {
            let (n, v) = f.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(n, 1);
            got.extend(v);
        }
        assert_eq!(got, values);
        assert_eq!(Framer::new().feed_all(&bytes).unwrap(), values);
    }

    #[test]
    fn feed_stops_after_each_value() {
        let data = br#" {"a":1}{"b":2}  [3]"#;
        let mut f = Framer::new();
        let (n, v) = f.feed(data).unwrap();
        assert_eq!((n, v), (8, Some(json!({"a":1}))));
        let (n2, v) = f.feed(&data[n..]).unwrap();
        assert_eq!((n2, v), (7, Some(json!({"b":2}))));
        let (n3, v) = f.feed(&data[n + n2..]).unwrap();
        assert_eq!((n3, v), (5, Some(json!([3]))));
        assert_eq!(f.feed(b"").unwrap(), (0, None));
        // A partial value is consumed entirely and buffered.
        assert_eq!(f.feed(br#"  {"x":"}"#).unwrap(), (9, None));
        assert_eq!(f.buffered(), 7);
        assert!(!f.is_idle());
        assert_eq!(f.feed(br#""} "#).unwrap(), (2, Some(json!({"x":"}"}))));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn strings_with_brackets_and_escapes() {
        let cases = [
            r#"{"s":"}"}"#,
            r#"{"s":"{"}"#,
            r#"{"s":"]]]]"}"#,
            r#"{"s":"\""}"#,
            r#"{"s":"\\"}"#,
            r#"{"s":"\\\""}"#,
            r#"{"s":"\\\\"}"#,
            r#"{"s\"}":"\"}{\\"}"#,
            r#"["\"]","[\"",  "\\", "\/", "\b\f\n\r\t", "\u005d\u007d"]"#,
            r#"["\\u0000", "\u0100\u1000\u0001\u000a\u0030", "\\\u0020"]"#,
        ];
        for c in cases {
            let expected: Value = serde_json::from_str(c).unwrap();
            let mut stream = Vec::new();
            for _ in 0..3 {
                stream.extend_from_slice(c.as_bytes());
            }
            for i in 0..=stream.len() {
                let mut f = Framer::new();
                let got = feed_chunks(&mut f, &[&stream[..i], &stream[i..]]).unwrap();
                assert_eq!(got, vec![expected.clone(); 3], "{c} split at {i}");
            }
        }
    }

    #[test]
    fn whitespace_between_and_around_messages() {
        let mut f = Framer::new();
        assert_eq!(f.feed_all(b" \t\r\n \n").unwrap(), Vec::<Value>::new());
        assert!(f.is_idle());
        f.finish().unwrap();
        let got = f.feed_all(b"{}{}\n{}\r\n\r\n\t{} []").unwrap();
        assert_eq!(got, vec![json!({}), json!({}), json!({}), json!({}), json!([])]);
        let got = f.feed_all(b"{\n\"a\"\n:\n[\n1\n,\n2\n]\n}\n").unwrap();
        assert_eq!(got, vec![json!({"a":[1,2]})]);
        // Form feed is not JSON whitespace (OVS: invalid character).
        let e = frame_err(b"{}\x0c{}");
        assert_eq!(e.to_string(), "line 0, column 0, byte 0: invalid character U+000c");
    }

    fn nested(depth: usize, open: &str, close: &str) -> String {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str(open);
        }
        for _ in 0..depth {
            s.push_str(close);
        }
        s
    }

    #[test]
    fn nesting_up_to_ovs_limit_is_accepted() {
        for depth in [1, 2, 126, 127, 128, 129, 500, 999, 1000] {
            let text = nested(depth, "[", "]");
            let mut f = Framer::new();
            let got = f.feed_all(text.as_bytes()).unwrap();
            let mut expected = json!([]);
            for _ in 1..depth {
                expected = Value::Array(vec![expected]);
            }
            assert_eq!(got, vec![expected], "depth {depth}");

            // Objects and arrays alternating: 2 levels per repetition.
            let text = nested(depth.div_ceil(2), r#"{"k":["#, "]}");
            let got = Framer::new().feed_all(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.len(), 1);
        }
        // Mixed content deep down survives the iterative parser.
        let deep = format!("{}0{}", r#"[{"s":"\"[{","n":1e2},"#.repeat(300), "]".repeat(300));
        let text = format!(r#"{{"a":{deep},"b":[1,-2.5,"x\"]",true,null,{{"c":{{}}}}]}}"#);
        let v = Framer::new().feed_all(text.as_bytes()).unwrap();
        assert_eq!(v[0]["b"], json!([1, -2.5, "x\"]", true, null, {"c": {}}]));
        assert_eq!(v[0]["a"][0], json!({"s":"\"[{","n":100.0}));
        let mut inner = &v[0]["a"];
        for _ in 0..299 {
            assert_eq!(inner[0], json!({"s":"\"[{","n":100.0}));
            inner = &inner[1];
        }
        assert_eq!(inner, &json!([{"s":"\"[{","n":100.0}, 0]));
    }

    #[test]
    fn nesting_beyond_limit_is_rejected_early() {
        // Only the opening brackets: the error comes before the value ends.
        let text = "[".repeat(1001);
        let mut f = Framer::new();
        let e = f.feed_all(text.as_bytes()).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TooDeep { limit: 1000 });
        assert_eq!(e.to_string(), "line 0, column 1000, byte 1000: input exceeds maximum nesting depth 1000");
        // Sticky.
        assert_eq!(f.feed(b"]").unwrap_err(), e);
        assert_eq!(f.finish().unwrap_err(), e);

        // Positions count from the end of the previous message.
        let text = format!("{{}}\n  {}", r#"{"a":"#.repeat(1001));
        let e = frame_err(text.as_bytes());
        assert_eq!(e.to_string(), "line 1, column 5002, byte 5003: input exceeds maximum nesting depth 1000");

        // Configurable.
        let mut f = Framer::with_limits(RecvLimits { max_depth: 3, ..RecvLimits::default() });
        assert_eq!(f.feed_all(b"[[[]]]").unwrap().len(), 1);
        assert_eq!(f.feed_all(b"[[[[").unwrap_err().kind, FrameErrorKind::TooDeep { limit: 3 });
    }

    #[test]
    fn iterative_parser_agrees_with_serde() {
        let cases = [
            "{}",
            "[]",
            "[ ]",
            "{ }",
            r#"{"a":1}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"":""}"#,
            r#"[1,2.5,-0,-0.0,1e10,1E-5,12345678901234567890,-9223372036854775808,0.1]"#,
            r#"[1.7976931348623157e308,5e-324,123456789012345678901234567890]"#,
            r#"["\u00e9","\ud83d\ude00","\/\b\f\n\r\t\"\\","é"]"#,
            r#"{"a":[{"b":null,"c":[true,false]},[[]],{}],"d":"x"}"#,
            " [ 1 , { \"a\" : [ ] } ] ",
            // Invalid:
            "[",
            "]",
            "{",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "[,1]",
            r#"{,"a":1}"#,
            "[01]",
            "[1.]",
            "[.5]",
            "[-]",
            "[1e]",
            "[+1]",
            "[1-2]",
            "[tru]",
            "[truee]",
            "[nul]",
            "[True]",
            r#"["\x"]"#,
            r#"["\u12"]"#,
            r#"["\ud800"]"#,
            "[1 2]",
            r#"{"a" "b"}"#,
            r#"{"a":1 "b":2}"#,
            r#"{1:2}"#,
            "[1]]",
            "[1] [2]",
            "[1e400]",
            r#"["unterminated]"#,
            "[\"\\\"]",
            "[}",
            "{]",
        ];
        for c in cases {
            let ours = parse_json_iterative(c.as_bytes());
            let serde = serde_json::from_str::<Value>(c);
            match (&ours, &serde) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{c}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{c}: iterative {ours:?} vs serde {serde:?}"),
            }
        }
        // The sample stream, value by value.
        let (bytes, values) = sample_stream();
        let mut got = Vec::new();
        let mut rest = &bytes[..];
        while let Some(start) = rest.iter().position(|&c| c == b'{' || c == b'[') {
            let mut f = Framer::new();
            let (n, v) = f.feed(&rest[start..]).unwrap();
            got.push(parse_json_iterative(&rest[start..start + n]).unwrap());
            assert_eq!(v.as_ref(), got.last());
            rest = &rest[start + n..];
        }
        assert_eq!(got, values);
    }

    #[test]
    fn size_limit_boundary_across_chunkings() {
        let limits = RecvLimits { max_message_size: 20, ..RecvLimits::default() };
        let exact = br#"{"a":"0123456789ab"}"#;
        assert_eq!(exact.len(), 20);
        let over = br#"{"a":"0123456789abc"}"#;
        let mut stream = b"  \n".to_vec();
        stream.extend_from_slice(exact);
        stream.extend_from_slice(b"    \n\n   ");
        stream.extend_from_slice(exact);
        for i in 0..=stream.len() {
            let mut f = Framer::with_limits(limits);
            let got = feed_chunks(&mut f, &[&stream[..i], &stream[i..]]).unwrap();
            assert_eq!(got.len(), 2);
        }
        for i in 0..=over.len() {
            let mut f = Framer::with_limits(limits);
            let e = feed_chunks(&mut f, &[&over[..i], &over[i..]]).unwrap_err();
            assert_eq!(e.kind, FrameErrorKind::TooLarge { limit: 20 });
            assert_eq!(e.to_string(), "line 0, column 20, byte 20: input exceeds maximum message size 20 bytes");
            assert!(f.buffer_capacity() <= 20);
        }
    }

    #[test]
    fn hundred_megabyte_message_rejected_without_buffering_it() {
        let limits = RecvLimits::default();
        let mut f = Framer::with_limits(limits);
        const TOTAL: usize = 100 * 1000 * 1000;
        let mut first = vec![b'x'; 1 << 20];
        first[..8].copy_from_slice(br#"{"a":["x"#);
        let filler = vec![b'x'; 1 << 20];
        let mut fed = 0usize;
        let mut error = None;
        while fed < TOTAL {
            let data = if fed == 0 { &first[..] } else { &filler[..] };
            match f.feed(data) {
                Ok((n, v)) => {
                    assert_eq!((n, v), (data.len(), None));
                    fed += n;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            assert!(f.buffered() <= limits.max_message_size);
            assert!(f.buffer_capacity() <= limits.max_message_size);
        }
        let e = error.expect("100 MB message accepted");
        assert_eq!(e.kind, FrameErrorKind::TooLarge { limit: DEFAULT_MAX_MESSAGE_SIZE });
        assert_eq!(fed, DEFAULT_MAX_MESSAGE_SIZE, "stopped as soon as the limit was passed");
        assert_eq!(e.byte, DEFAULT_MAX_MESSAGE_SIZE as u64);
        // The buffer is released on error.
        assert_eq!(f.buffer_capacity(), 0);
        assert!(f.feed(b"]}").is_err());
    }

    #[test]
    fn invalid_json_is_rejected() {
        let cases: &[(&[u8], &str)] = &[
            (b"1", "line 0, column 0, byte 0: syntax error at beginning of input"),
            (b"  \"x\"", "line 0, column 2, byte 2: syntax error at beginning of input"),
            (b"null", "line 0, column 0, byte 0: syntax error at beginning of input"),
            (b"]", "line 0, column 0, byte 0: syntax error at beginning of input"),
            (b"\n\n #", "line 2, column 1, byte 3: invalid character '#'"),
            (b"\x16\x03\x01", "line 0, column 0, byte 0: invalid character U+0016"),
            (b"GET / HTTP/1.1\r\n", "line 0, column 0, byte 0: invalid character 'G'"),
            (b"{} \xc3\xa9", "line 0, column 1, byte 1: invalid character U+00c3"),
            (b"{\"a\":\"x\ny\"}", "line 0, column 7, byte 7: U+000A must be escaped in quoted string"),
            (b"{\"a\":\n\"\t\"}", "line 1, column 1, byte 7: U+0009 must be escaped in quoted string"),
            (b"{\"a\": #}", "line 0, column 6, byte 6: invalid character '#'"),
            (b"{\"a\": 'x'}", "line 0, column 6, byte 6: invalid character '''"),
            (b"{\"a\":1}{\"b\":TRUE}", "line 0, column 5, byte 5: invalid character 'T'"),
            (b"{\"a\":1", "line 0, column 6, byte 6: unexpected end of input"),
            (b"{\"a\":\"1", "line 0, column 7, byte 7: unexpected end of input in quoted string"),
            (b"{\"a\":\"1\\", "line 0, column 8, byte 8: unexpected end of input in quoted string"),
            (b"[\"a\\u0000\"]", "line 0, column 8, byte 8: null bytes not supported in quoted strings"),
            (b"[\"\\\\\\u0000\"]", "line 0, column 9, byte 9: null bytes not supported in quoted strings"),
        ];
        for (input, text) in cases {
            assert_eq!(frame_err(input).to_string(), *text, "{:?}", String::from_utf8_lossy(input));
        }
        // Errors found once the value is complete: reported at its start,
        // with serde_json's description.
        for input in [
            &b"{\"a\" 1}"[..],
            b"{\"a\":tru}",
            b"{,}",
            b"{\"a\":1,}",
            b"[1,]",
            b"{\"a\":[}]",
            b"{]",
            b"[\"\\x\"]",
            b"[\"\xff\"]",
            b"[01]",
            b"[\"\\u00\"]",
        ] {
            let e = frame_err(input);
            assert!(matches!(e.kind, FrameErrorKind::Syntax(_)), "{:?}: {e}", String::from_utf8_lossy(input));
        }
        let e = frame_err(b"{}\n  {\"a\" 1}");
        assert_eq!((e.line, e.column, e.byte), (1, 2, 3));
        assert!(e.to_string().starts_with("line 1, column 2, byte 3: expected `:`"), "{e}");
    }

    #[test]
    fn message_shapes_like_ovs() {
        let ok: &[(Value, Message)] = &[
            (json!({"method":"list_dbs","params":[],"id":0}), Message::request("list_dbs", vec![], json!(0))),
            (
                json!({"method":"echo","params":["x"],"id":"echo"}),
                Message::request("echo", vec![json!("x")], json!("echo")),
            ),
            (
                json!({"method":"update","params":[null,{}],"id":null}),
                Message::notification("update", vec![json!(null), json!({})]),
            ),
            (json!({"method":"update","params":[]}), Message::notification("update", vec![])),
            (json!({"result":[],"error":null,"id":1}), Message::response(json!([]), json!(1))),
            (json!({"result":false,"id":[1,2]}), Message::response(json!(false), json!([1, 2]))),
            (json!({"result":0,"id":{"a":1}}), Message::response(json!(0), json!({"a":1}))),
            (json!({"result":null,"error":"E","id":2}), Message::error(json!("E"), json!(2))),
            (
                json!({"error":{"error":"unknown method"},"id":"x"}),
                Message::error(json!({"error":"unknown method"}), json!("x")),
            ),
            (
                json!({"method":"m","params":[],"id":1,"result":null,"error":null}),
                Message::request("m", vec![], json!(1)),
            ),
        ];
        for (j, m) in ok {
            assert_eq!(Message::from_json(j.clone()).as_ref(), Ok(m), "{j}");
            m.validate().unwrap();
            assert_eq!(Message::from_json(serde_json::from_slice(&m.to_bytes()).unwrap()).as_ref(), Ok(m));
        }
        let bad: &[(Value, &str)] = &[
            (json!([1, 2]), "message is not a JSON object"),
            (json!("x"), "message is not a JSON object"),
            (json!({"method":1,"params":[],"id":1}), "method is not a JSON string"),
            (json!({"method":null,"params":[],"id":1}), "method is not a JSON string"),
            (json!({"method":"m","params":[],"id":1,"jsonrpc":"2.0"}), "message has unexpected member \"jsonrpc\""),
            (json!({"method":"m","params":{},"id":1}), "\"params\" must be JSON array"),
            (json!({"method":"m","params":"x"}), "\"params\" must be JSON array"),
            (json!({"result":1,"params":{},"id":1}), "\"params\" must be JSON array"),
            (json!({"method":"m","id":1}), "request must have \"params\""),
            (json!({"method":"m","params":null,"id":1}), "request must have \"params\""),
            (json!({"params":[],"id":1}), "request must have \"method\""),
            (json!({"result":null,"error":null,"id":1}), "request must have \"method\""),
            (json!({}), "notification must have \"method\""),
            (json!({"id":null}), "notification must have \"method\""),
            (json!({"method":"m"}), "notification must have \"params\""),
            (json!({"result":1}), "reply must have \"id\""),
            (json!({"result":1,"error":null,"id":null}), "reply must have \"id\""),
            (json!({"result":1,"error":"e","id":1}), "reply must not have \"error\""),
            (json!({"method":"m","result":1,"id":1}), "reply must not have \"method\""),
            (json!({"params":[],"result":1,"id":1}), "reply must not have \"params\""),
            (json!({"error":"e","id":null}), "error must have \"id\""),
            (json!({"error":"e"}), "error must have \"id\""),
            (json!({"method":"m","error":"e","id":1}), "error must not have \"method\""),
            (json!({"params":[],"error":"e","id":1}), "error must not have \"params\""),
        ];
        for (j, text) in bad {
            assert_eq!(Message::from_json(j.clone()), Err(text.to_string()), "{j}");
        }
    }

    #[test]
    fn serialization_matches_ovs() {
        let cases = [
            (Message::request("echo", vec![], json!("echo")), r#"{"method":"echo","params":[],"id":"echo"}"#),
            (
                Message::request(
                    "transact",
                    vec![json!("Open_vSwitch"), json!({"op":"comment","comment":"a\"b\n"})],
                    json!(3),
                ),
                r#"{"method":"transact","params":["Open_vSwitch",{"comment":"a\"b\n","op":"comment"}],"id":3}"#,
            ),
            (
                Message::notification("update", vec![json!(null), json!({})]),
                r#"{"method":"update","params":[null,{}],"id":null}"#,
            ),
            (Message::response(json!(["a", 1.5]), json!(0)), r#"{"result":["a",1.5],"error":null,"id":0}"#),
            (
                Message::error(json!({"error":"unknown method"}), json!(5)),
                r#"{"result":null,"error":{"error":"unknown method"},"id":5}"#,
            ),
        ];
        for (m, text) in cases {
            assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), text);
            assert_eq!(serde_json::from_str::<Value>(text).unwrap(), m.to_json());
        }
        assert_eq!(Message::echo_request().to_bytes(), br#"{"method":"echo","params":[],"id":"echo"}"#);
    }

    #[test]
    fn validate_and_helpers() {
        assert_eq!(Message::response(json!(null), json!(1)).validate(), Err("request must have \"method\"".into()));
        assert_eq!(Message::response(json!(1), json!(null)).validate(), Err("reply must have \"id\"".into()));
        assert_eq!(Message::error(json!("e"), json!(null)).validate(), Err("error must have \"id\"".into()));
        assert!(Message::error(json!(null), json!(1)).validate().is_err());
        assert_eq!(
            Message::Request { method: "m".into(), params: json!({}), id: json!(1) }.validate(),
            Err("\"params\" must be JSON array".into())
        );
        assert_eq!(Message::request("m", vec![], json!(null)).validate(), Err("request must have \"id\"".into()));
        // validate() agrees with what from_json() would say on the wire.
        for m in [
            Message::response(json!(null), json!(1)),
            Message::response(json!(1), json!(null)),
            Message::error(json!("e"), json!(null)),
            Message::error(json!(null), json!(1)),
            Message::error(json!(null), json!(null)),
        ] {
            let wire = Message::from_json(serde_json::from_slice(&m.to_bytes()).unwrap());
            assert_eq!(wire.map(|_| ()), m.validate(), "{m:?}");
        }

        let echo = Message::request("echo", vec![json!("hi")], json!(9));
        assert_eq!(echo.echo_reply(), Some(Message::response(json!(["hi"]), json!(9))));
        assert_eq!(Message::request("x", vec![], json!(1)).echo_reply(), None);
        assert!(Message::response(json!([]), json!("echo")).is_echo_reply());
        assert!(!Message::response(json!([]), json!(1)).is_echo_reply());
        assert_eq!(echo.type_name(), "request");
        assert_eq!(echo.method(), Some("echo"));
        assert_eq!(echo.id(), Some(&json!(9)));
        assert_eq!(Message::notification("u", vec![]).id(), None);
        assert_eq!(Message::notification("u", vec![]).type_name(), "notification");
        assert_eq!(Message::response(json!(1), json!(1)).type_name(), "reply");
        assert_eq!(Message::error(json!(1), json!(1)).type_name(), "error");
    }

    #[tokio::test]
    async fn duplex_round_trip() {
        let (a, b) = duplex(64);
        let server = tokio::spawn(async move {
            let mut conn = Connection::new(b);
            let mut seen = Vec::new();
            while let Some(msg) = conn.recv().await.unwrap() {
                if let Message::Request { method, params, id } = &msg {
                    let reply = if method == "echo" {
                        msg.echo_reply().unwrap()
                    } else if method == "fail" {
                        Message::error(json!({"error":"unknown method"}), id.clone())
                    } else {
                        Message::response(json!({"method": method, "n": params.as_array().unwrap().len()}), id.clone())
                    };
                    conn.send(&reply).await.unwrap();
                }
                seen.push(msg);
            }
            seen
        });
        let mut client = Connection::new(a);
        let mut sent = Vec::new();
        for i in 0..20 {
            let req = match i % 4 {
                0 => Message::request("echo", vec![json!(i), json!("}\"{")], json!(i)),
                1 => Message::request("transact", vec![json!("db"); i], json!(format!("id{i}"))),
                2 => Message::request("fail", vec![], json!([i])),
                _ => Message::notification("note", vec![json!({"i": i})]),
            };
            client.send(&req).await.unwrap();
            if let Message::Request { method, params, id } = &req {
                let reply = client.recv().await.unwrap().unwrap();
                let expected = match method.as_str() {
                    "echo" => Message::response(params.clone(), id.clone()),
                    "fail" => Message::error(json!({"error":"unknown method"}), id.clone()),
                    _ => Message::response(json!({"method": "transact", "n": i}), id.clone()),
                };
                assert_eq!(reply, expected);
            }
            sent.push(req);
        }
        drop(client);
        assert_eq!(server.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn eof_inside_a_message_is_an_error() {
        let (mut a, b) = duplex(1024);
        a.write_all(br#"{"method":"echo","params":[],"id":1} {"method":"#).await.unwrap();
        drop(a);
        let mut conn = Connection::new(b);
        assert_eq!(conn.recv().await.unwrap(), Some(Message::request("echo", vec![], json!(1))));
        let e = conn.recv().await.unwrap_err();
        assert_eq!(e.to_string(), "error parsing stream: line 0, column 11, byte 11: unexpected end of input");
    }

    #[tokio::test]
    async fn bad_message_fails_the_connection() {
        let (mut a, b) = duplex(1024);
        a.write_all(br#"{"method":"echo","params":{},"id":1}{"method":"echo","params":[],"id":2}"#).await.unwrap();
        let mut conn = Connection::new(b);
        let e = conn.recv().await.unwrap_err();
        assert_eq!(e.to_string(), "received bad JSON-RPC message: \"params\" must be JSON array");
        // Sticky, like OVS's connection status.
        assert_eq!(conn.recv().await.unwrap_err().to_string(), e.to_string());

        let (mut a, b) = duplex(1024);
        a.write_all(b"[1,2]").await.unwrap();
        let mut conn = Connection::new(b);
        assert_eq!(
            conn.recv().await.unwrap_err().to_string(),
            "received bad JSON-RPC message: message is not a JSON object"
        );
    }

    #[tokio::test]
    async fn connection_rejects_huge_message_without_reading_it_all() {
        let (mut a, b) = duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 1 << 20];
            a.write_all(br#"{"method":"transact","params":[""#).await?;
            let mut sent = 0usize;
            while sent < 100_000_000 {
                a.write_all(&chunk).await?;
                sent += chunk.len();
            }
            io::Result::Ok(sent)
        });
        let limit = 1 << 20;
        let mut conn = Connection::with_limits(b, RecvLimits { max_message_size: limit, ..RecvLimits::default() });
        let e = conn.recv().await.unwrap_err();
        assert!(matches!(&e, JsonRpcError::Parse(FrameError { kind: FrameErrorKind::TooLarge { .. }, .. })), "{e}");
        assert!(conn.bytes_received() <= (limit + READ_CHUNK) as u64, "{}", conn.bytes_received());
        drop(conn);
        // The peer's writes fail once we close.
        assert!(writer.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn recv_is_cancel_safe() {
        let (mut a, b) = duplex(1024);
        let msgs: Vec<Message> =
            (0..5).map(|i| Message::request("m", vec![json!("x".repeat(i * 50))], json!(i))).collect();
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.to_bytes()).collect();
        tokio::spawn(async move {
            for piece in bytes.chunks(7) {
                a.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut conn = Connection::new(b);
        let mut got = Vec::new();
        let mut timeouts = 0;
        while got.len() < msgs.len() {
            tokio::select! {
                m = conn.recv() => got.push(m.unwrap().unwrap()),
                _ = tokio::time::sleep(Duration::from_micros(300)) => timeouts += 1,
            }
        }
        assert_eq!(got, msgs);
        assert!(timeouts > 0);
        assert_eq!(conn.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn split_keeps_buffered_input() {
        let (mut a, b) = duplex(1024);
        let m1 = Message::request("a", vec![], json!(1));
        let m2 = Message::notification("b", vec![]);
        let mut bytes = m1.to_bytes();
        bytes.extend(m2.to_bytes());
        a.write_all(&bytes).await.unwrap();
        let mut conn = Connection::new(b);
        assert_eq!(conn.recv().await.unwrap(), Some(m1));
        let (mut reader, mut writer) = conn.into_split();
        assert_eq!(reader.recv().await.unwrap(), Some(m2));
        writer.write_all(b"{}").await.unwrap();
        let mut buf = [0u8; 2];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"{}");
        assert_eq!(reader.bytes_received(), bytes.len() as u64);
    }

    #[tokio::test]
    async fn queue_sends_in_order_and_closes_gracefully() {
        let (a, b) = duplex(256);
        let (mut reader, queue, task) = Connection::new(a).into_queued(BacklogLimits::default());
        let task = tokio::spawn(task.run());
        let mut peer = Connection::new(b);
        let msgs: Vec<Message> =
            (0..40).map(|i| Message::response(json!({"i": i, "pad": "p".repeat(100)}), json!(i))).collect();
        for m in &msgs {
            queue.send(m).unwrap();
        }
        assert!(queue.backlog() > 0);
        let q2 = queue.clone();
        for m in &msgs {
            assert_eq!(peer.recv().await.unwrap().as_ref(), Some(m));
        }
        queue.drained().await.unwrap();
        assert_eq!((queue.backlog(), queue.backlog_msgs()), (0, 0));
        q2.send(&msgs[0]).unwrap();
        queue.close();
        assert!(matches!(queue.send(&msgs[1]), Err(JsonRpcError::Closed)));
        assert_eq!(peer.recv().await.unwrap().as_ref(), Some(&msgs[0]));
        queue.drained().await.unwrap();
        task.await.unwrap().unwrap();
        // The write half was shut down: the peer sees end of stream, and can
        // still talk to us.
        assert_eq!(peer.recv().await.unwrap(), None);
        peer.send(&Message::notification("x", vec![])).await.unwrap();
        assert_eq!(reader.recv().await.unwrap(), Some(Message::notification("x", vec![])));
    }

    #[tokio::test]
    async fn queue_finishes_when_last_handle_dropped() {
        let (a, b) = duplex(256);
        let (queue, task) = outgoing_queue(a, BacklogLimits::UNLIMITED);
        let task = tokio::spawn(task.run());
        let q2 = queue.clone();
        queue.send(&Message::notification("bye", vec![])).unwrap();
        drop(queue);
        q2.send(&Message::notification("bye2", vec![])).unwrap();
        drop(q2);
        let mut peer = Connection::new(b);
        assert_eq!(peer.recv().await.unwrap(), Some(Message::notification("bye", vec![])));
        assert_eq!(peer.recv().await.unwrap(), Some(Message::notification("bye2", vec![])));
        assert_eq!(peer.recv().await.unwrap(), None);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn queue_backlog_limits_like_ovs() {
        // A peer that never reads.
        let (a, _b) = duplex(128);
        let (queue, task) = outgoing_queue(a, BacklogLimits { max_msgs: 55, max_bytes: 0 });
        let task = tokio::spawn(task.run());
        let m = Message::response(json!("x".repeat(1000)), json!(1));
        for _ in 0..55 {
            queue.send(&m).unwrap();
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(queue.backlog_msgs(), 55);
        assert_eq!(queue.backlog(), 55 * m.to_bytes().len() - 128);
        let e = queue.send(&m).unwrap_err();
        assert_eq!(e.to_string(), "sending backlog exceeded maximum number of messages (56 > 55)");
        assert!(e.is_backlog_exceeded());
        // Everything is discarded and the writer, stuck mid-write, gives up.
        assert_eq!((queue.backlog(), queue.backlog_msgs()), (0, 0));
        assert_eq!(task.await.unwrap().unwrap_err().to_string(), e.to_string());
        assert_eq!(queue.send(&m).unwrap_err().to_string(), e.to_string());
        assert!(queue.drained().await.is_err());

        // Byte limit: only checked from 50 queued messages on, as in OVS, so
        // a few big messages pass.
        let (a, _b) = duplex(128);
        let (queue, task) = outgoing_queue(a, BacklogLimits { max_msgs: 0, max_bytes: 10_000 });
        let task = tokio::spawn(task.run());
        let big = Message::response(json!("y".repeat(100_000)), json!(1));
        let small = Message::response(json!(1), json!(1));
        queue.send(&big).unwrap();
        queue.send(&big).unwrap();
        for _ in 0..47 {
            queue.send(&small).unwrap();
        }
        let e = queue.send(&small).unwrap_err();
        assert!(matches!(e, JsonRpcError::BacklogBytes { max: 10_000, .. }), "{e}");
        assert!(e.to_string().starts_with("sending backlog exceeded maximum size ("), "{e}");
        assert!(task.await.unwrap().is_err());

        // Unlimited never fails; abort stops it.
        let (a, _b) = duplex(128);
        let (queue, task) = outgoing_queue(a, BacklogLimits::UNLIMITED);
        let task = tokio::spawn(task.run());
        for _ in 0..1000 {
            queue.send(&small).unwrap();
        }
        assert_eq!(queue.backlog_msgs(), 1000);
        queue.abort();
        assert!(matches!(task.await.unwrap(), Err(JsonRpcError::Closed)));
        assert!(matches!(queue.send(&small), Err(JsonRpcError::Closed)));
    }

    #[tokio::test]
    async fn queue_reports_write_errors() {
        let (a, b) = duplex(16);
        let (queue, task) = outgoing_queue(a, BacklogLimits::default());
        let task = tokio::spawn(task.run());
        queue.send(&Message::response(json!("z".repeat(1000)), json!(1))).unwrap();
        drop(b);
        let e = task.await.unwrap().unwrap_err();
        assert!(matches!(e, JsonRpcError::Io(_)), "{e}");
        assert!(matches!(queue.status(), Some(JsonRpcError::Io(_))));
        assert!(queue.send(&Message::response(json!(1), json!(1))).is_err());
    }

    #[tokio::test]
    async fn dropped_writer_task_closes_queue() {
        let (a, _b) = duplex(16);
        let (queue, task) = outgoing_queue(a, BacklogLimits::default());
        drop(task);
        assert!(matches!(queue.send(&Message::notification("x", vec![])), Err(JsonRpcError::Closed)));
    }

    #[tokio::test]
    async fn direct_queue_writes_at_once_and_queues_the_rest_in_order() {
        let (a, mut b) = duplex(64);
        let (queue, task) = outgoing_queue_direct(a, BacklogLimits::default());
        // No writer task running yet: a message that fits goes out directly.
        let small = Message::notification("x", vec![json!(1)]);
        queue.send(&small).unwrap();
        assert_eq!((queue.backlog(), queue.backlog_msgs()), (0, 0));
        let mut got = vec![0u8; small.to_bytes().len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, small.to_bytes());
        // One that does not fit is written in part; the rest, and whatever
        // follows, waits for the task, in order.
        let big = Message::response(json!("y".repeat(300)), json!(2));
        let after = Message::notification("z", vec![]);
        queue.send(&big).unwrap();
        assert_eq!(queue.backlog_msgs(), 1);
        assert!(queue.backlog() > 0 && queue.backlog() < big.to_bytes().len());
        queue.send(&after).unwrap();
        assert_eq!(queue.backlog_msgs(), 2);
        let task = tokio::spawn(task.run());
        let mut want = big.to_bytes();
        want.extend(after.to_bytes());
        let mut got = vec![0u8; want.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        queue.drained().await.unwrap();
        queue.close();
        task.await.unwrap().unwrap();
    }
}
