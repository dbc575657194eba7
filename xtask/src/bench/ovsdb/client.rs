//! A bare JSON-RPC client over a unix socket, for the benchmark: requests are
//! text built beforehand, replies are framed by counting brackets (xtask is a
//! debug build, so nothing on the hot path parses JSON), and every read is
//! timestamped so a reply's arrival is the read that completed it, not the
//! moment the client got round to scanning it.
use std::{
    io::{self, Read, Write},
    ops::Range,
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const CHUNK: usize = 256 * 1024;

pub struct Client {
    s: UnixStream,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
    /// Bytes before this were handed out as frames (valid until the next read).
    consumed: usize,
    /// Next byte to scan.
    scan: usize,
    /// Start of the frame being scanned, if one is open.
    open: Option<usize>,
    depth: u32,
    in_str: bool,
    esc: bool,
    /// When the last read returned.
    pub last_read: Instant,
    next_id: u64,
}

impl Client {
    pub fn connect(sock: &Path) -> Result<Client> {
        let s = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            s,
            buf: Vec::with_capacity(CHUNK),
            chunk: vec![0u8; CHUNK].into_boxed_slice(),
            consumed: 0,
            scan: 0,
            open: None,
            depth: 0,
            in_str: false,
            esc: false,
            last_read: Instant::now(),
            next_id: 1_000_000,
        })
    }

    pub fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.s.as_raw_fd()
    }

    pub fn set_nonblocking(&self, on: bool) -> Result<()> {
        Ok(self.s.set_nonblocking(on)?)
    }

    pub fn send(&mut self, text: &[u8]) -> Result<()> {
        self.s.write_all(text).context("sending to the server")
    }

    /// Reads what is there. Ok(false): nothing to read now (non-blocking).
    pub fn fill(&mut self) -> Result<bool> {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.scan -= self.consumed;
            if let Some(o) = &mut self.open {
                *o -= self.consumed;
            }
            self.consumed = 0;
        }
        match self.s.read(&mut self.chunk) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(n) => {
                self.last_read = Instant::now();
                self.buf.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e).context("reading from the server"),
        }
    }

    /// The next complete JSON value already read, if any.
    pub fn take_frame(&mut self) -> Result<Option<Range<usize>>> {
        let b = &self.buf;
        let mut i = self.scan;
        while i < b.len() {
            let c = b[i];
            if self.open.is_none() {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' => {}
                    b'{' | b'[' => {
                        self.open = Some(i);
                        self.depth = 1;
                    }
                    _ => bail!("the server sent something that is not a JSON object: {:?}", c as char),
                }
            } else if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if c == b'\\' {
                    self.esc = true;
                } else if c == b'"' {
                    self.in_str = false;
                }
            } else {
                match c {
                    b'"' => self.in_str = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            let start = self.open.take().unwrap();
                            self.scan = i + 1;
                            self.consumed = i + 1;
                            return Ok(Some(start..i + 1));
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.scan = i;
        Ok(None)
    }

    /// The next JSON value, waiting for it.
    pub fn next_frame(&mut self) -> Result<Range<usize>> {
        loop {
            if let Some(r) = self.take_frame()? {
                return Ok(r);
            }
            self.fill()?;
        }
    }

    pub fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// Waits for the reply with `id`, answering echo requests and skipping
    /// notifications. Returns the reply's bytes and when the read that
    /// completed it returned.
    pub fn reply(&mut self, id: u64) -> Result<(Range<usize>, Instant)> {
        let tag = format!("\"id\":{id}");
        loop {
            let r = self.next_frame()?;
            let f = &self.buf[r.clone()];
            if find(f, b"\"method\"").is_some() {
                if find(f, b"\"method\":\"echo\"").is_some() {
                    let v: Value = serde_json::from_slice(f)?;
                    let e = json!({"id": v["id"], "result": v["params"], "error": null}).to_string();
                    self.send(e.as_bytes())?;
                }
                continue;
            }
            if find_id(f, tag.as_bytes()) {
                return Ok((r, self.last_read));
            }
            bail!("a reply to a request never sent: {}", String::from_utf8_lossy(&f[..f.len().min(200)]));
        }
    }

    /// A request with parsed reply, for set-up; fails on an error reply.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let m = json!({"method": method, "params": params, "id": id}).to_string();
        self.send(m.as_bytes())?;
        let (r, _) = self.reply(id)?;
        let v: Value = serde_json::from_slice(self.bytes(r)).context("parsing a reply")?;
        if !v["error"].is_null() {
            bail!("{method} failed: {}", v["error"]);
        }
        Ok(v["result"].clone())
    }

    /// `transact` with parsed reply; fails if any operation failed.
    pub fn transact(&mut self, params: Value) -> Result<Vec<Value>> {
        let r = self.call("transact", params)?;
        let ops = r.as_array().context("transact result is not an array")?.clone();
        if let Some(e) = ops.iter().find(|o| !o["error"].is_null()) {
            bail!("transaction failed: {e}");
        }
        Ok(ops)
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `"id":N` present and not followed by another digit.
fn find_id(f: &[u8], tag: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = find(&f[from..], tag) {
        let end = from + p + tag.len();
        if !f.get(end).is_some_and(u8::is_ascii_digit) {
            return true;
        }
        from = end;
    }
    false
}

/// How many times `needle` occurs in `hay`.
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut from = 0;
    while let Some(p) = find(&hay[from..], needle) {
        n += 1;
        from += p + needle.len();
    }
    n
}

/// A transact reply all of whose operations succeeded: the only `"error"` in
/// it is the top-level `"error":null` (a failed operation's result carries
/// an `"error"` member). Compact JSON, as both servers write it; anything
/// else is checked by parsing.
pub fn transact_ok(f: &[u8]) -> Result<()> {
    if count(f, b"\"error\"") == 1 && find(f, b"\"error\":null").is_some() {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(f).context("parsing a transact reply")?;
    if !v["error"].is_null() {
        bail!("transact failed: {}", v["error"]);
    }
    match v["result"].as_array() {
        Some(ops) => match ops.iter().find(|o| !o["error"].is_null()) {
            Some(e) => bail!("transaction failed: {e}"),
            None => Ok(()),
        },
        None => bail!("transact reply without a result: {v}"),
    }
}
