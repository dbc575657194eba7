//! Open vSwitch's datapath flow syntax ("odp", as printed by `ovs-dpctl
//! dump-flows` and read by `ovs-dpctl add-flow`, from OVS's `lib/odp-util.c`)
//! on top of our fixed-layout [`FlowKey`] and [`Action`] types.
//!
//! # Flow matches
//!
//! A [`FlowMatch`] is a key and a mask of the same layout; a mask bit of 1
//! means the key bit is significant. The text form is a comma-separated list
//! of attributes, printed in this order:
//!
//! ```text
//! in_port(N)  eth(src=MAC,dst=MAC)
//! [eth_type(TPID),vlan(vid=V,pcp=P),encap( ...same again, at most twice... )]
//! eth_type(0xNNNN)
//! ipv4(src=A,dst=A,proto=N,tos=0xN,ttl=N,frag=no|first|later)
//! ipv6(src=A6,dst=A6,label=0xN,proto=N,tclass=0xN,hlimit=N,frag=...)
//! arp(sip=A,tip=A,op=N,sha=MAC,tha=MAC)
//! tcp(src=N,dst=N) tcp_flags(syn|ack) udp(..) sctp(..)
//! icmp(type=N,code=N) icmpv6(type=N,code=N) nd(target=A6,sll=MAC,tll=MAC)
//! ```
//!
//! Conventions (all following `odp-util.c` unless noted):
//!
//! * A field written without a mask is exact (all mask bits set); `value/mask`
//!   gives a partial mask. Ports, protocol numbers etc. take `/0xNNNN` masks,
//!   IPv4 addresses `/255.255.0.0`, IPv6 addresses `/ffff:ffff::`, MACs
//!   `/ff:ff:ff:00:00:00`. Numbers are decimal or `0x`-prefixed hex.
//! * [`format_flow`] is the non-verbose format: fields whose mask is zero are
//!   left out, and so are attributes with nothing left, except `eth(...)`,
//!   which is always printed (as `eth()` when wildcarded), exactly like a
//!   kernel-datapath dump.
//! * [`parse_flow`] stores the key already masked (`key & mask`), so a parsed
//!   match is canonical; [`format_flow`] masks the key itself before printing.
//! * VLANs: in our key the outer tag is index 0 of `vlan_tci`/`vlan_tpid`, the
//!   inner tag index 1, and `eth_type` is always the innermost ethertype. In
//!   the text the tag's TPID is the `eth_type(...)` that comes before
//!   `vlan(...)`, and everything behind the tag is inside `encap(...)`:
//!   `eth_type(0x88a8),vlan(vid=10,pcp=0),encap(eth_type(0x8100),vlan(vid=20,pcp=0),encap(eth_type(0x0800),...))`.
//!   A `vlan(...)` starts as OVS does with the CFI ("tag present") bit set and
//!   exact, so `vlan(vid=10,pcp=0)` is TCI 0x100a with mask 0xffff. A level is
//!   printed as a tag when the CFI bit is matched as 1 or a non-zero TPID is
//!   matched. A mask that only says "untagged" (CFI matched as 0) prints
//!   nothing, which is what the absence of `vlan()` means to OVS; note that
//!   (unlike the kernel datapath) [`parse_flow`] does not add that "untagged"
//!   match by itself: what is not written is wildcarded.
//! * `frag=no|first|later` maps to `nw_frag` 0 / `FRAG_ANY` /
//!   `FRAG_ANY|FRAG_LATER` with mask `FRAG_ANY|FRAG_LATER`; `frag` is printed
//!   whenever the `FRAG_ANY` bit of the mask is set.
//! * `eth_type(0/0xffff)` (the literal value `0`) is OVS's way of writing an
//!   802.2 frame without an Ethernet II type, our `ETH_TYPE_NONE` (0x05ff);
//!   any other spelling of zero (`0x0000`) is a literal ethertype 0.
//! * ICMP type/code are stored as big-endian 16-bit values in `tp_src`/`tp_dst`
//!   with mask 0x00ff when exact; the ARP opcode is the low byte of
//!   `nw_proto`; ND's `sll`/`tll` live in `arp_sha`/`arp_tha`.
//! * `tcp_flags(...)` is printed as flag names: `tcp_flags(syn|ack)` when
//!   exact (12 bits), `tcp_flags(+syn-ack)` when partially masked; numeric
//!   `tcp_flags(0x12/0x12)` is also accepted.
//! * Attributes must come with their prerequisites, as the datapath needs
//!   them: `ipv4(...)` needs `eth_type(0x0800)`, `tcp(...)` needs
//!   `ipv4(proto=6)` or `ipv6(proto=6)`, and so on (attributes that match
//!   nothing, like `ipv4()`, need nothing). `recirc_id`, `dp_hash`,
//!   `skb_priority`, `skb_mark`, `ct_zone`, `ct_mark` are accepted when their
//!   value is 0 (they are always 0 in our datapath), `packet_type` only as
//!   `packet_type(ns=0,id=0)` (Ethernet).
//!
//! # Actions: text form and encoding
//!
//! [`parse_actions`] accepts a comma-separated list; [`format_actions`] prints
//! `drop` for an empty list. Every [`Action`] has `kind`, `arg` (a host-order
//! `u32`) and `data` (16 bytes); bytes and fields not mentioned are zero.
//!
//! | text | kind | encoding |
//! |------|------|----------|
//! | `N` (a port number) | `OUTPUT` | `arg` = datapath port number |
//! | `userspace(pid=N)` | `USERSPACE` | `arg` = pid (the upcall's `pid` field) |
//! | `push_vlan(tpid=0x88a8,vid=V,pcp=P,cfi=C)` | `PUSH_VLAN` | `arg` = `tpid << 16 \| tci`, `tci` = `pcp << 13 \| cfi << 12 \| vid`; `tpid` defaults to 0x8100, `cfi` to 1 (`VLAN_CFI` set), `pcp` to 0. `VLAN_CFI` is OVS's "tag present" marker, not a wire bit: the datapath pushes TPID `tpid` and TCI `tci & !VLAN_CFI`, as the kernel does |
//! | `pop_vlan` | `POP_VLAN` | no arguments |
//! | `set(eth(src=M))` / `set(eth(dst=M))` | `SET_ETH_SRC` / `SET_ETH_DST` | `data[0..6]` = MAC |
//! | `set(ipv4(src=A))` / `dst` | `SET_IPV4_SRC` / `SET_IPV4_DST` | `data[0..4]` = address in network order |
//! | `set(ipv4(tos=V/M))` | `SET_IPV4_TOS` | `arg` = `V \| M << 8` |
//! | `set(ipv4(ttl=V))` | `SET_IPV4_TTL` | `arg` = `V \| M << 8` |
//! | `set(ipv6(src=A6))` / `dst` | `SET_IPV6_SRC` / `SET_IPV6_DST` | `data[0..16]` = address |
//! | `set(ipv6(tclass=V/M))` | `SET_IPV6_TCLASS` | `arg` = `V \| M << 8` |
//! | `set(ipv6(hlimit=V))` | `SET_IPV6_HLIMIT` | `arg` = `V \| M << 8` |
//! | `set(tcp(src=N))` / `dst`, also `udp`, `sctp` | `SET_TP_SRC` / `SET_TP_DST` | `data[0..2]` = port, big endian; `arg` = IP protocol of the header named (6 tcp, 17 udp, 132 sctp) |
//! | `dec_ttl` or `dec_ttl(le_1(drop))` | `DEC_TTL` | no arguments: decrement the IPv4 TTL / IPv6 hop limit; drop the packet if it was <= 1 |
//!
//! For the one-byte sets (`tos`, `ttl`, `tclass`, `hlimit`) the mask `M` is in
//! bits 8..16 of `arg` and the value in bits 0..8, already masked
//! (`V & M == V`); the datapath writes `new = (old & !M) | V`. Without `/M` in
//! the text, `M` is 0xff. (OVS prints a DSCP-only change as
//! `set(ipv4(tos=0x4/0xfc))`.) Masked sets of addresses and ports are not
//! supported (an error, unless the mask is all ones).
//!
//! `set(ipv4(src=..,dst=..))` expands into one action per field, in OVS field
//! order (eth: src, dst; ipv4: src, dst, tos, ttl; ipv6: src, dst, tclass,
//! hlimit; l4: src, dst) whatever the order in the text; [`format_actions`]
//! merges a run of consecutive sets of the same header (and, for l4, the same
//! protocol) whose fields come in that order back into one `set(...)`, so that
//! `parse_actions(&format_actions(a)) == a` for any list. At most
//! [`MAX_ACTIONS`] actions fit in a flow.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use oxvs_dp_abi::{
    Action, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_NONE, ETH_TYPE_RARP, ETH_TYPE_VLAN_8021Q, FRAG_ANY,
    FRAG_LATER, FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, MAX_ACTIONS, VLAN_CFI,
    action,
};

/// A parsed datapath flow match: key and mask (mask bit 1 = significant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowMatch {
    pub key: FlowKey,
    pub mask: FlowKey,
}

/// A syntax error that names the offending token, e.g.
/// `ipv4(src=10.0.0.300): bad IPv4 address "10.0.0.300"`; `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct ParseError {
    pub msg: String,
    /// Byte offset into the input of the offending token.
    pub pos: usize,
}

fn perr(pos: usize, msg: impl Into<String>) -> ParseError {
    let msg: String = msg.into();
    // Keep the message on one line whatever the input held.
    let msg = if msg.chars().any(char::is_control) {
        msg.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
    } else {
        msg
    };
    ParseError { msg, pos }
}

/// Most nested VLAN tags a key holds.
const MAX_VLANS: usize = 2;
/// The 12 TCP flag bits a key holds.
const TCP_FLAGS_MASK: u16 = 0x0fff;
const IPV6_LABEL_MASK: u32 = 0x000f_ffff;
const FRAG_MASK: u8 = FRAG_ANY | FRAG_LATER;

// ---------------------------------------------------------------------------
// Lexing
// ---------------------------------------------------------------------------

/// Separators between attributes and between actions (as OVS's `delimiters`).
const DELIMS: &[u8] = b", \t\r\n";
/// Characters that end a field value.
const VALUE_END: &[u8] = b",() \t\r\n";

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_delims(&mut self) {
        while matches!(self.peek(), Some(c) if DELIMS.contains(&c)) {
            self.pos += 1;
        }
    }

    /// `[A-Za-z0-9_]*`
    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// Everything up to the next `,`, `(`, `)` or white space.
    fn value(&mut self) -> &'a str {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if !VALUE_END.contains(&c)) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// The text from `start` to the current position (for "after ..." messages).
    fn since(&self, start: usize) -> &'a str {
        &self.s[start.min(self.pos)..self.pos]
    }

    /// A short quoted description of what is at the current position.
    fn here(&self) -> String {
        let rest = &self.s[self.pos..];
        match rest.chars().next() {
            None => "end of input".to_string(),
            Some(c) => {
                let tok: String =
                    rest.chars().take_while(|c| !(c.is_ascii() && VALUE_END.contains(&(*c as u8)))).take(40).collect();
                if tok.is_empty() { format!("\"{c}\"") } else { format!("\"{tok}\"") }
            }
        }
    }
}

/// One `name=value` inside an attribute.
struct Field<'a> {
    name: &'a str,
    value: &'a str,
    /// Offset of the value (or of the name, for errors about the name).
    pos: usize,
    name_pos: usize,
}

/// Parses `name=value,...)` after an opening parenthesis; `start` is where the
/// attribute's text begins (for messages).
fn parse_fields<'a>(lx: &mut Lexer<'a>, start: usize) -> Result<Vec<Field<'a>>, ParseError> {
    let mut out = Vec::new();
    loop {
        if lx.eat(b')') {
            return Ok(out);
        }
        if lx.at_end() {
            return Err(perr(lx.pos, format!("expected ')' after \"{}\"", lx.since(start))));
        }
        let name_pos = lx.pos;
        let name = lx.ident();
        if name.is_empty() {
            return Err(perr(
                lx.pos,
                format!("expected a field name after \"{}\", found {}", lx.since(start), lx.here()),
            ));
        }
        if !lx.eat(b'=') {
            return Err(perr(lx.pos, format!("expected '=' after \"{}\", found {}", lx.since(start), lx.here())));
        }
        let pos = lx.pos;
        let value = lx.value();
        if value.is_empty() {
            return Err(perr(pos, format!("missing value after \"{}\", found {}", lx.since(start), lx.here())));
        }
        out.push(Field { name, value, pos, name_pos });
        match lx.peek() {
            Some(b',') => lx.pos += 1,
            Some(b')') => {}
            None => {
                return Err(perr(lx.pos, format!("expected ')' after \"{}\"", lx.since(start))));
            }
            Some(_) => {
                return Err(perr(
                    lx.pos,
                    format!("expected ',' or ')' after \"{}\", found {}", lx.since(start), lx.here()),
                ));
            }
        }
    }
}

/// Parses a single `value)` after an opening parenthesis.
fn parse_single<'a>(lx: &mut Lexer<'a>, start: usize) -> Result<(&'a str, usize), ParseError> {
    let pos = lx.pos;
    // tcp_flags values contain '|', '+', '-', '[', ']'; none contain ',' or ')'.
    let v = lx.value();
    if lx.eat(b')') {
        Ok((v, pos))
    } else if lx.at_end() {
        Err(perr(lx.pos, format!("expected ')' after \"{}\"", lx.since(start))))
    } else {
        Err(perr(lx.pos, format!("expected ')' after \"{}\", found {}", lx.since(start), lx.here())))
    }
}

// ---------------------------------------------------------------------------
// Value parsing
// ---------------------------------------------------------------------------

enum NumErr {
    Bad,
    Range,
}

/// Decimal, or hex with a `0x` prefix.
fn num(s: &str) -> Result<u64, NumErr> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumErr::Bad);
    }
    let mut v: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix).unwrap_or(0) as u64;
        v = v.checked_mul(radix as u64).and_then(|v| v.checked_add(d)).ok_or(NumErr::Range)?;
    }
    Ok(v)
}

fn num_max(s: &str, max: u64, what: &str) -> Result<u64, String> {
    match num(s) {
        Ok(v) if v <= max => Ok(v),
        Ok(_) | Err(NumErr::Range) => Err(format!("{what} out of range")),
        Err(NumErr::Bad) => Err(format!("bad number \"{s}\" (expected decimal or 0x-prefixed hex)")),
    }
}

fn split_mask(tok: &str) -> (&str, Option<&str>) {
    match tok.split_once('/') {
        Some((v, m)) => (v, Some(m)),
        None => (tok, None),
    }
}

/// `value[/mask]`, both at most `max`; the mask defaults to `full`.
fn masked_num(tok: &str, max: u64, full: u64) -> Result<(u64, u64), String> {
    let (v, m) = split_mask(tok);
    let v = num_max(v, max, "value")?;
    let m = match m {
        None => full,
        Some(m) => num_max(m, max, "mask")?,
    };
    Ok((v, m))
}

/// A number with no mask allowed.
fn plain_num(tok: &str, max: u64) -> Result<u64, String> {
    if tok.contains('/') {
        return Err("a mask is not allowed here".to_string());
    }
    num_max(tok, max, "value")
}

fn mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.is_empty() || part.len() > 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

fn masked_mac(tok: &str) -> Result<([u8; 6], [u8; 6]), String> {
    let (v, m) = split_mask(tok);
    let v = mac(v).ok_or_else(|| format!("bad MAC address \"{v}\""))?;
    let m = match m {
        None => [0xff; 6],
        Some(m) => mac(m).ok_or_else(|| format!("bad MAC mask \"{m}\""))?,
    };
    Ok((v, m))
}

fn ipv4(s: &str) -> Option<[u8; 4]> {
    Ipv4Addr::from_str(s).ok().map(|a| a.octets())
}

fn masked_ipv4(tok: &str) -> Result<([u8; 4], [u8; 4]), String> {
    let (v, m) = split_mask(tok);
    let v = ipv4(v).ok_or_else(|| format!("bad IPv4 address \"{v}\""))?;
    let m = match m {
        None => [0xff; 4],
        Some(m) => match ipv4(m) {
            Some(m) => m,
            None => match m.parse::<u32>() {
                Ok(len) if len <= 32 && !m.starts_with('+') => {
                    (u32::MAX.checked_shl(32 - len).unwrap_or(0)).to_be_bytes()
                }
                _ => return Err(format!("bad IPv4 mask \"{m}\"")),
            },
        },
    };
    Ok((v, m))
}

fn ipv6(s: &str) -> Option<[u8; 16]> {
    Ipv6Addr::from_str(s).ok().map(|a| a.octets())
}

fn masked_ipv6(tok: &str) -> Result<([u8; 16], [u8; 16]), String> {
    let (v, m) = split_mask(tok);
    let v = ipv6(v).ok_or_else(|| format!("bad IPv6 address \"{v}\""))?;
    let m = match m {
        None => [0xff; 16],
        Some(m) => match ipv6(m) {
            Some(m) => m,
            None => match m.parse::<u32>() {
                Ok(len) if len <= 128 && !m.starts_with('+') => {
                    (u128::MAX.checked_shl(128 - len).unwrap_or(0)).to_be_bytes()
                }
                _ => return Err(format!("bad IPv6 mask \"{m}\"")),
            },
        },
    };
    Ok((v, m))
}

/// TCP flag names in bit order, as OVS's `packet_tcp_flag_to_string`.
const TCP_FLAG_NAMES: [&str; 12] =
    ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns", "[200]", "[400]", "[800]"];

fn tcp_flag_bit(name: &str) -> Option<u16> {
    TCP_FLAG_NAMES.iter().position(|n| *n == name).map(|i| 1u16 << i)
}

/// `0x12/0xfff`, `+syn-ack`, or `syn|ack` (numbers allowed in the last).
fn parse_tcp_flags(tok: &str) -> Result<(u16, u16), String> {
    let max = TCP_FLAGS_MASK as u64;
    if tok.contains('/') {
        let (v, m) = masked_num(tok, max, max)?;
        return Ok((v as u16, m as u16));
    }
    if tok.starts_with('+') || tok.starts_with('-') {
        let (mut flags, mut mask) = (0u16, 0u16);
        let mut rest = tok;
        while let Some(c) = rest.chars().next() {
            let set = match c {
                '+' => true,
                '-' => false,
                _ => return Err(format!("expected '+' or '-' before \"{rest}\"")),
            };
            rest = &rest[1..];
            let end = rest.find(['+', '-']).unwrap_or(rest.len());
            let name = &rest[..end];
            let bit = tcp_flag_bit(name).ok_or_else(|| format!("unknown TCP flag \"{name}\""))?;
            if mask & bit != 0 {
                return Err(format!("TCP flag \"{name}\" given twice"));
            }
            mask |= bit;
            if set {
                flags |= bit;
            }
            rest = &rest[end..];
        }
        return Ok((flags, mask));
    }
    let mut flags = 0u16;
    if !tok.is_empty() {
        for part in tok.split('|') {
            if let Some(bit) = tcp_flag_bit(part) {
                flags |= bit;
            } else if part.starts_with(|c: char| c.is_ascii_digit()) {
                flags |= num_max(part, max, "value")? as u16;
            } else {
                return Err(format!("unknown TCP flag \"{part}\""));
            }
        }
    }
    Ok((flags, TCP_FLAGS_MASK))
}

// ---------------------------------------------------------------------------
// Flow parsing
// ---------------------------------------------------------------------------

/// Attributes with prerequisites, checked once the whole flow is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prereq {
    Ipv4,
    Ipv6,
    Arp,
    L4(&'static str, u8),
    Icmp,
    Icmpv6,
    Nd,
}

/// Per-`encap` nesting level state.
#[derive(Default)]
struct Level {
    /// Value, mask, "written as the literal 0", position.
    eth_type: Option<(u16, u16, bool, usize)>,
    vlan: Option<(u16, u16)>,
    encap: bool,
    /// The first L3/L4 attribute seen at this level (name, position).
    l3: Option<(&'static str, usize)>,
}

struct FlowParser<'a> {
    lx: Lexer<'a>,
    key: FlowKey,
    mask: FlowKey,
    seen: Vec<&'static str>,
    checks: Vec<(Prereq, usize)>,
}

const KNOWN_ATTRS: &[&str] = &[
    "in_port",
    "eth",
    "eth_type",
    "vlan",
    "encap",
    "ipv4",
    "ipv6",
    "tcp",
    "tcp_flags",
    "udp",
    "sctp",
    "icmp",
    "icmpv6",
    "arp",
    "nd",
    "recirc_id",
    "dp_hash",
    "skb_priority",
    "skb_mark",
    "ct_zone",
    "ct_mark",
    "packet_type",
];

/// OVS attributes our datapath has no equivalent for.
const UNSUPPORTED_ATTRS: &[&str] =
    &["tunnel", "ct_state", "ct_label", "ct_tuple4", "ct_tuple6", "mpls", "nd_ext", "nsh"];

/// Parse a flow match, e.g. "in_port(1),eth(src=00:01:02:03:04:05,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0,proto=17,frag=no),udp(dst=53)".
///
/// The empty string is the all-wildcard match.
pub fn parse_flow(s: &str) -> Result<FlowMatch, ParseError> {
    let mut p = FlowParser {
        lx: Lexer::new(s),
        key: FlowKey::zeroed(),
        mask: FlowKey::zeroed(),
        seen: Vec::new(),
        checks: Vec::new(),
    };
    p.level(0, 0)?;
    p.check_prereqs()?;
    Ok(FlowMatch { key: p.key.masked(&p.mask), mask: p.mask })
}

impl<'a> FlowParser<'a> {
    /// Parses attributes until the end of input (depth 0) or the `)` closing
    /// the `encap(` that began at `start`.
    fn level(&mut self, depth: usize, start: usize) -> Result<(), ParseError> {
        let mut lv = Level::default();
        loop {
            self.lx.skip_delims();
            match self.lx.peek() {
                None if depth == 0 => break,
                None => {
                    return Err(perr(self.lx.pos, format!("expected ')' after \"{}\"", self.lx.since(start))));
                }
                Some(b')') if depth > 0 => {
                    self.lx.pos += 1;
                    break;
                }
                Some(_) => self.attr(depth, &mut lv)?,
            }
        }

        let tagged = lv.vlan.is_some() || lv.encap;
        if tagged {
            if let Some((name, pos)) = lv.l3 {
                return Err(perr(pos, format!("{name}(...) must be inside encap(...) when the frame has a VLAN tag")));
            }
            if let Some((v, m, _, _)) = lv.eth_type {
                self.key.vlan_tpid[depth] = v.to_be();
                self.mask.vlan_tpid[depth] = m.to_be();
            }
            if let Some((t, m)) = lv.vlan {
                self.key.vlan_tci[depth] = t.to_be();
                self.mask.vlan_tci[depth] = m.to_be();
            }
        } else if let Some((v, m, literal_zero, _)) = lv.eth_type {
            let v = if literal_zero { ETH_TYPE_NONE } else { v };
            self.key.eth_type = v.to_be();
            self.mask.eth_type = m.to_be();
        }
        Ok(())
    }

    fn once(&mut self, name: &'static str, pos: usize) -> Result<(), ParseError> {
        if self.seen.contains(&name) {
            return Err(perr(pos, format!("duplicate attribute \"{name}\"")));
        }
        self.seen.push(name);
        Ok(())
    }

    fn attr(&mut self, depth: usize, lv: &mut Level) -> Result<(), ParseError> {
        let start = self.lx.pos;
        let name = self.lx.ident();
        if name.is_empty() {
            return Err(perr(start, format!("expected an attribute name, found {}", self.lx.here())));
        }
        let Some(&name) = KNOWN_ATTRS.iter().find(|n| **n == name) else {
            if let Some(u) = UNSUPPORTED_ATTRS.iter().find(|n| **n == name) {
                return Err(perr(start, format!("unsupported attribute \"{u}\"")));
            }
            return Err(perr(start, format!("unknown attribute \"{name}\"")));
        };
        if !self.lx.eat(b'(') {
            return Err(perr(self.lx.pos, format!("expected '(' after \"{name}\", found {}", self.lx.here())));
        }
        let before = self.mask;

        match name {
            "in_port" => {
                self.once(name, start)?;
                let (v, pos) = parse_single(&mut self.lx, start)?;
                let (k, m) = masked_num(v, u32::MAX as u64, u32::MAX as u64)
                    .map_err(|e| perr(pos, format!("in_port({v}): {e}")))?;
                self.key.in_port = k as u32;
                self.mask.in_port = m as u32;
            }
            "eth" => {
                self.once(name, start)?;
                for f in parse_fields(&mut self.lx, start)? {
                    let ctx = || format!("eth({}={})", f.name, f.value);
                    let (k, m) = match f.name {
                        "src" | "dst" => masked_mac(f.value).map_err(|e| perr(f.pos, format!("{}: {e}", ctx())))?,
                        _ => return Err(unknown_field(&f, "eth", "src, dst")),
                    };
                    let (kf, mf) = if f.name == "src" {
                        (&mut self.key.eth_src, &mut self.mask.eth_src)
                    } else {
                        (&mut self.key.eth_dst, &mut self.mask.eth_dst)
                    };
                    *kf = k;
                    *mf = m;
                }
            }
            "eth_type" => {
                if lv.eth_type.is_some() {
                    return Err(perr(start, "duplicate attribute \"eth_type\""));
                }
                let (v, pos) = parse_single(&mut self.lx, start)?;
                let (k, m) = masked_num(v, 0xffff, 0xffff).map_err(|e| perr(pos, format!("eth_type({v}): {e}")))?;
                let literal_zero = split_mask(v).0 == "0";
                lv.eth_type = Some((k as u16, m as u16, literal_zero, start));
            }
            "vlan" => {
                if depth >= MAX_VLANS {
                    return Err(perr(start, "vlan(...): too many VLAN headers (at most 2)"));
                }
                if lv.vlan.is_some() {
                    return Err(perr(start, "duplicate attribute \"vlan\""));
                }
                // As OVS: the tag-present bit starts set and exact.
                let (mut tci, mut tmask) = (VLAN_CFI, VLAN_CFI);
                for f in parse_fields(&mut self.lx, start)? {
                    let (max, shift) = match f.name {
                        "vid" => (0xfff, 0),
                        "pcp" => (7, 13),
                        "cfi" => (1, 12),
                        "tci" => (0xffff, 0),
                        _ => return Err(unknown_field(&f, "vlan", "vid, pcp, cfi, tci")),
                    };
                    let (k, m) = masked_num(f.value, max, max)
                        .map_err(|e| perr(f.pos, format!("vlan({}={}): {e}", f.name, f.value)))?;
                    let bits = (max as u16) << shift;
                    tci = (tci & !bits) | ((k as u16) << shift);
                    tmask = (tmask & !bits) | ((m as u16) << shift);
                }
                lv.vlan = Some((tci, tmask));
            }
            "encap" => {
                if depth >= MAX_VLANS {
                    return Err(perr(start, "encap(...): too many VLAN headers (at most 2)"));
                }
                if lv.encap {
                    return Err(perr(start, "duplicate attribute \"encap\""));
                }
                lv.encap = true;
                self.level(depth + 1, start)?;
            }
            "ipv4" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                for f in parse_fields(&mut self.lx, start)? {
                    let e = |e: String| perr(f.pos, format!("ipv4({}={}): {e}", f.name, f.value));
                    match f.name {
                        "src" | "dst" => {
                            let (k, m) = masked_ipv4(f.value).map_err(e)?;
                            let (kf, mf) = if f.name == "src" {
                                (&mut self.key.nw_src, &mut self.mask.nw_src)
                            } else {
                                (&mut self.key.nw_dst, &mut self.mask.nw_dst)
                            };
                            kf[..4].copy_from_slice(&k);
                            mf[..4].copy_from_slice(&m);
                        }
                        "proto" | "tos" | "ttl" => self.set_u8(f.name, f.value).map_err(e)?,
                        "frag" => self.set_frag(f.value).map_err(e)?,
                        _ => {
                            return Err(unknown_field(&f, "ipv4", "src, dst, proto, tos, ttl, frag"));
                        }
                    }
                }
                self.check_if_set(&before, Prereq::Ipv4, start);
            }
            "ipv6" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                for f in parse_fields(&mut self.lx, start)? {
                    let e = |e: String| perr(f.pos, format!("ipv6({}={}): {e}", f.name, f.value));
                    match f.name {
                        "src" | "dst" => {
                            let (k, m) = masked_ipv6(f.value).map_err(e)?;
                            if f.name == "src" {
                                self.key.nw_src = k;
                                self.mask.nw_src = m;
                            } else {
                                self.key.nw_dst = k;
                                self.mask.nw_dst = m;
                            }
                        }
                        "label" => {
                            let max = IPV6_LABEL_MASK as u64;
                            let (k, m) = masked_num(f.value, max, max).map_err(e)?;
                            self.key.ipv6_label = (k as u32).to_be();
                            self.mask.ipv6_label = (m as u32).to_be();
                        }
                        "proto" => self.set_u8("proto", f.value).map_err(e)?,
                        "tclass" => self.set_u8("tos", f.value).map_err(e)?,
                        "hlimit" => self.set_u8("ttl", f.value).map_err(e)?,
                        "frag" => self.set_frag(f.value).map_err(e)?,
                        _ => {
                            return Err(unknown_field(&f, "ipv6", "src, dst, label, proto, tclass, hlimit, frag"));
                        }
                    }
                }
                self.check_if_set(&before, Prereq::Ipv6, start);
            }
            "tcp" | "udp" | "sctp" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                for f in parse_fields(&mut self.lx, start)? {
                    let (k, m) = match f.name {
                        "src" | "dst" => masked_num(f.value, 0xffff, 0xffff)
                            .map_err(|e| perr(f.pos, format!("{name}({}={}): {e}", f.name, f.value)))?,
                        _ => return Err(unknown_field(&f, name, "src, dst")),
                    };
                    let (kf, mf) = if f.name == "src" {
                        (&mut self.key.tp_src, &mut self.mask.tp_src)
                    } else {
                        (&mut self.key.tp_dst, &mut self.mask.tp_dst)
                    };
                    *kf = (k as u16).to_be();
                    *mf = (m as u16).to_be();
                }
                let proto = match name {
                    "tcp" => IPPROTO_TCP,
                    "udp" => IPPROTO_UDP,
                    _ => IPPROTO_SCTP,
                };
                self.check_if_set(&before, Prereq::L4(name, proto), start);
            }
            "tcp_flags" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                let (v, pos) = parse_single(&mut self.lx, start)?;
                let (k, m) = parse_tcp_flags(v).map_err(|e| perr(pos, format!("tcp_flags({v}): {e}")))?;
                self.key.tcp_flags = k.to_be();
                self.mask.tcp_flags = m.to_be();
                self.check_if_set(&before, Prereq::L4(name, IPPROTO_TCP), start);
            }
            "icmp" | "icmpv6" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                for f in parse_fields(&mut self.lx, start)? {
                    let (k, m) = match f.name {
                        "type" | "code" => masked_num(f.value, 0xff, 0xff)
                            .map_err(|e| perr(f.pos, format!("{name}({}={}): {e}", f.name, f.value)))?,
                        _ => return Err(unknown_field(&f, name, "type, code")),
                    };
                    let (kf, mf) = if f.name == "type" {
                        (&mut self.key.tp_src, &mut self.mask.tp_src)
                    } else {
                        (&mut self.key.tp_dst, &mut self.mask.tp_dst)
                    };
                    *kf = (k as u16).to_be();
                    *mf = (m as u16).to_be();
                }
                let pre = if name == "icmp" { Prereq::Icmp } else { Prereq::Icmpv6 };
                self.check_if_set(&before, pre, start);
            }
            "arp" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                for f in parse_fields(&mut self.lx, start)? {
                    let e = |e: String| perr(f.pos, format!("arp({}={}): {e}", f.name, f.value));
                    match f.name {
                        "sip" | "tip" => {
                            let (k, m) = masked_ipv4(f.value).map_err(e)?;
                            let (kf, mf) = if f.name == "sip" {
                                (&mut self.key.nw_src, &mut self.mask.nw_src)
                            } else {
                                (&mut self.key.nw_dst, &mut self.mask.nw_dst)
                            };
                            kf[..4].copy_from_slice(&k);
                            mf[..4].copy_from_slice(&m);
                        }
                        "op" => {
                            // The key keeps only the opcode's low byte.
                            let (v, m) = split_mask(f.value);
                            let k = num_max(v, 0xff, "value").map_err(e)?;
                            let m = match m {
                                None => 0xff,
                                Some(m) => num_max(m, 0xffff, "mask").map_err(e)? & 0xff,
                            };
                            self.key.nw_proto = k as u8;
                            self.mask.nw_proto = m as u8;
                        }
                        "sha" | "tha" => {
                            let (k, m) = masked_mac(f.value).map_err(e)?;
                            let (kf, mf) = if f.name == "sha" {
                                (&mut self.key.arp_sha, &mut self.mask.arp_sha)
                            } else {
                                (&mut self.key.arp_tha, &mut self.mask.arp_tha)
                            };
                            *kf = k;
                            *mf = m;
                        }
                        _ => return Err(unknown_field(&f, "arp", "sip, tip, op, sha, tha")),
                    }
                }
                self.check_if_set(&before, Prereq::Arp, start);
            }
            "nd" => {
                self.once(name, start)?;
                lv.l3.get_or_insert((name, start));
                for f in parse_fields(&mut self.lx, start)? {
                    let e = |e: String| perr(f.pos, format!("nd({}={}): {e}", f.name, f.value));
                    match f.name {
                        "target" => {
                            let (k, m) = masked_ipv6(f.value).map_err(e)?;
                            self.key.nd_target = k;
                            self.mask.nd_target = m;
                        }
                        "sll" | "tll" => {
                            let (k, m) = masked_mac(f.value).map_err(e)?;
                            let (kf, mf) = if f.name == "sll" {
                                (&mut self.key.arp_sha, &mut self.mask.arp_sha)
                            } else {
                                (&mut self.key.arp_tha, &mut self.mask.arp_tha)
                            };
                            *kf = k;
                            *mf = m;
                        }
                        _ => return Err(unknown_field(&f, "nd", "target, sll, tll")),
                    }
                }
                self.check_if_set(&before, Prereq::Nd, start);
            }
            "recirc_id" | "dp_hash" | "skb_priority" | "skb_mark" | "ct_zone" | "ct_mark" => {
                self.once(name, start)?;
                let (v, pos) = parse_single(&mut self.lx, start)?;
                let (k, _) = masked_num(v, u32::MAX as u64, u32::MAX as u64)
                    .map_err(|e| perr(pos, format!("{name}({v}): {e}")))?;
                if k != 0 {
                    return Err(perr(pos, format!("{name}({v}): unsupported (only 0 is accepted)")));
                }
            }
            "packet_type" => {
                self.once(name, start)?;
                for f in parse_fields(&mut self.lx, start)? {
                    if f.name != "ns" && f.name != "id" {
                        return Err(unknown_field(&f, name, "ns, id"));
                    }
                    let (k, _) = masked_num(f.value, 0xffff, 0xffff)
                        .map_err(|e| perr(f.pos, format!("packet_type({}={}): {e}", f.name, f.value)))?;
                    if k != 0 {
                        return Err(perr(
                            f.pos,
                            format!("packet_type({}={}): unsupported (only Ethernet, ns=0,id=0)", f.name, f.value),
                        ));
                    }
                }
            }
            _ => return Err(perr(start, format!("unknown attribute \"{name}\""))),
        }

        // Attributes are separated by delimiters.
        match self.lx.peek() {
            None | Some(b')') => Ok(()),
            Some(c) if DELIMS.contains(&c) => Ok(()),
            Some(_) => Err(perr(
                self.lx.pos,
                format!("expected ',' after \"{}\", found {}", self.lx.since(start), self.lx.here()),
            )),
        }
    }

    /// `proto`, `tos` (= tclass) or `ttl` (= hlimit), each a masked u8.
    fn set_u8(&mut self, field: &str, value: &str) -> Result<(), String> {
        let (k, m) = masked_num(value, 0xff, 0xff)?;
        let (kf, mf) = match field {
            "proto" => (&mut self.key.nw_proto, &mut self.mask.nw_proto),
            "tos" => (&mut self.key.nw_tos, &mut self.mask.nw_tos),
            _ => (&mut self.key.nw_ttl, &mut self.mask.nw_ttl),
        };
        *kf = k as u8;
        *mf = m as u8;
        Ok(())
    }

    fn set_frag(&mut self, value: &str) -> Result<(), String> {
        if value.contains('/') {
            return Err("frag takes no mask (expected no, first or later)".to_string());
        }
        self.key.nw_frag = match value.to_ascii_lowercase().as_str() {
            "no" => 0,
            "first" => FRAG_ANY,
            "later" => FRAG_ANY | FRAG_LATER,
            _ => {
                return Err(format!("bad fragment type \"{value}\" (expected no, first or later)"));
            }
        };
        self.mask.nw_frag = FRAG_MASK;
        Ok(())
    }

    fn check_if_set(&mut self, before: &FlowKey, what: Prereq, pos: usize) {
        if self.mask != *before {
            self.checks.push((what, pos));
        }
    }

    fn check_prereqs(&self) -> Result<(), ParseError> {
        let (k, m) = (&self.key, &self.mask);
        let et = |t: u16| m.eth_type == 0xffff && u16::from_be(k.eth_type) == t;
        let proto = |p: u8| m.nw_proto == 0xff && k.nw_proto == p;
        for &(what, pos) in &self.checks {
            let msg = match what {
                Prereq::Ipv4 if !et(ETH_TYPE_IP) => "ipv4(...) requires eth_type(0x0800)".to_string(),
                Prereq::Ipv6 if !et(ETH_TYPE_IPV6) => "ipv6(...) requires eth_type(0x86dd)".to_string(),
                Prereq::Arp if !et(ETH_TYPE_ARP) && !et(ETH_TYPE_RARP) => {
                    "arp(...) requires eth_type(0x0806) or eth_type(0x8035)".to_string()
                }
                Prereq::L4(name, p) if !((et(ETH_TYPE_IP) || et(ETH_TYPE_IPV6)) && proto(p)) => {
                    format!("{name}(...) requires ipv4(proto={p}) or ipv6(proto={p})")
                }
                Prereq::Icmp if !(et(ETH_TYPE_IP) && proto(IPPROTO_ICMP)) => {
                    "icmp(...) requires eth_type(0x0800) and ipv4(proto=1)".to_string()
                }
                Prereq::Icmpv6 if !(et(ETH_TYPE_IPV6) && proto(IPPROTO_ICMPV6)) => {
                    "icmpv6(...) requires eth_type(0x86dd) and ipv6(proto=58)".to_string()
                }
                Prereq::Nd if !(et(ETH_TYPE_IPV6) && proto(IPPROTO_ICMPV6)) => {
                    "nd(...) requires eth_type(0x86dd) and ipv6(proto=58)".to_string()
                }
                _ => continue,
            };
            return Err(perr(pos, msg));
        }
        Ok(())
    }
}

fn unknown_field(f: &Field<'_>, attr: &str, expected: &str) -> ParseError {
    perr(f.name_pos, format!("{attr}({}={}): unknown field \"{}\" (expected {expected})", f.name, f.value, f.name))
}

// ---------------------------------------------------------------------------
// Flow formatting
// ---------------------------------------------------------------------------

/// C's `%#x`: `0` for zero, else `0x...`.
fn hex0(v: u64) -> String {
    if v == 0 { "0".to_string() } else { format!("{v:#x}") }
}

fn fmt_mac(a: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", a[0], a[1], a[2], a[3], a[4], a[5])
}

fn fmt_ipv4(a: &[u8]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// IPv6 text as glibc's `inet_ntop` writes it (what OVS prints): the longest
/// run (first if tied) of two or more zero words becomes `::`, and an address
/// of the form `::a.b.c.d` or `::ffff:a.b.c.d` ends in dotted quad.
fn fmt_ipv6(a: &[u8; 16]) -> String {
    let w: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([a[2 * i], a[2 * i + 1]]));
    let (mut best, mut best_len) = (None, 0);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let s = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - s > best_len {
                best = Some(s);
                best_len = i - s;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best = None;
    }
    let mut out = String::new();
    for i in 0..8 {
        if let Some(b) = best
            && i >= b
            && i < b + best_len
        {
            if i == b {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best == Some(0) && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            out.push_str(&fmt_ipv4(&a[12..16]));
            return out;
        }
        let _ = write!(out, "{:x}", w[i]);
    }
    if let Some(b) = best
        && b + best_len == 8
    {
        out.push(':');
    }
    out
}

/// Collects `name=value[/mask]` fields of one attribute.
#[derive(Default)]
struct Fields(Vec<String>);

impl Fields {
    fn mac(&mut self, name: &str, k: &[u8; 6], m: &[u8; 6]) {
        if *m == [0; 6] {
            return;
        }
        if *m == [0xff; 6] {
            self.0.push(format!("{name}={}", fmt_mac(k)));
        } else {
            self.0.push(format!("{name}={}/{}", fmt_mac(k), fmt_mac(m)));
        }
    }

    fn ipv4(&mut self, name: &str, k: &[u8], m: &[u8]) {
        if m[..4] == [0; 4] {
            return;
        }
        if m[..4] == [0xff; 4] {
            self.0.push(format!("{name}={}", fmt_ipv4(k)));
        } else {
            self.0.push(format!("{name}={}/{}", fmt_ipv4(k), fmt_ipv4(m)));
        }
    }

    fn ipv6(&mut self, name: &str, k: &[u8; 16], m: &[u8; 16]) {
        if *m == [0; 16] {
            return;
        }
        if *m == [0xff; 16] {
            self.0.push(format!("{name}={}", fmt_ipv6(k)));
        } else {
            self.0.push(format!("{name}={}/{}", fmt_ipv6(k), fmt_ipv6(m)));
        }
    }

    /// Decimal value, hex mask (OVS's format_u8u / format_be16).
    fn dec(&mut self, name: &str, k: u64, m: u64, full: u64) {
        if m == 0 {
            return;
        }
        let mut s = format!("{name}={k}");
        if m != full {
            let _ = write!(s, "/{m:#x}");
        }
        self.0.push(s);
    }

    /// Hex value, hex mask (OVS's format_u8x / format_ipv6_label).
    fn hex(&mut self, name: &str, k: u64, m: u64, full: u64) {
        if m == 0 {
            return;
        }
        let mut s = format!("{name}={}", hex0(k));
        if m != full {
            let _ = write!(s, "/{m:#x}");
        }
        self.0.push(s);
    }

    fn frag(&mut self, k: u8, m: u8) {
        if m & FRAG_ANY == 0 {
            return;
        }
        let v = if k & FRAG_ANY == 0 {
            "no"
        } else if k & FRAG_LATER != 0 {
            "later"
        } else {
            "first"
        };
        self.0.push(format!("frag={v}"));
    }

    fn attr(self, name: &str) -> String {
        format!("{name}({})", self.0.join(","))
    }

    /// The attribute, or nothing if no field is matched.
    fn attr_if_any(self, out: &mut Vec<String>, name: &str) {
        if !self.0.is_empty() {
            out.push(self.attr(name));
        }
    }
}

/// `vid=..,pcp=..[,cfi=0]` as OVS's format_vlan_tci (non-verbose).
fn fmt_vlan_tci(tci: u16, mask: u16) -> String {
    let mut f = Vec::new();
    let (vid, vm) = (tci & 0x0fff, mask & 0x0fff);
    if vid != 0 || vm != 0 {
        let mut s = format!("vid={vid}");
        if vm != 0x0fff {
            let _ = write!(s, "/0x{vm:x}");
        }
        f.push(s);
    }
    let (pcp, pm) = (tci >> 13, mask >> 13);
    if pcp != 0 || pm != 0 {
        let mut s = format!("pcp={pcp}");
        if pm != 7 {
            let _ = write!(s, "/0x{pm:x}");
        }
        f.push(s);
    }
    if mask & VLAN_CFI == 0 {
        // Not something OVS produces (its vlan() always matches the CFI bit);
        // written so that it reads back the same.
        f.push("cfi=0/0".to_string());
    } else if tci & VLAN_CFI == 0 {
        f.push("cfi=0".to_string());
    }
    f.join(",")
}

/// Format like ovs-dpctl dump-flows (non-verbose): attributes/fields whose
/// mask is all zero are omitted (except `eth()`); an exact field prints
/// `field=value`, a partially masked one `field=value/mask`.
pub fn format_flow(m: &FlowMatch) -> String {
    let mk = &m.mask;
    let k = m.key.masked(mk);
    let mut out = Vec::new();

    if mk.in_port != 0 {
        if mk.in_port == u32::MAX {
            out.push(format!("in_port({})", k.in_port));
        } else {
            out.push(format!("in_port({}/{:#x})", k.in_port, mk.in_port));
        }
    }
    let mut eth = Fields::default();
    eth.mac("src", &k.eth_src, &mk.eth_src);
    eth.mac("dst", &k.eth_dst, &mk.eth_dst);
    out.push(eth.attr("eth"));
    format_level(&k, mk, 0, &mut out);
    out.join(",")
}

fn be16(v: u16) -> u16 {
    u16::from_be(v)
}

fn fmt_eth_type(v: u16, m: u16) -> String {
    if m == 0xffff { format!("eth_type(0x{v:04x})") } else { format!("eth_type(0x{v:04x}/0x{m:04x})") }
}

fn format_level(k: &FlowKey, m: &FlowKey, depth: usize, out: &mut Vec<String>) {
    if depth < MAX_VLANS {
        let tci = be16(k.vlan_tci[depth]);
        let (tpid, tpid_m) = (be16(k.vlan_tpid[depth]), be16(m.vlan_tpid[depth]));
        if tci & VLAN_CFI != 0 || tpid != 0 {
            if tpid_m != 0 {
                out.push(fmt_eth_type(tpid, tpid_m));
            }
            let tci_m = be16(m.vlan_tci[depth]);
            if tci_m != 0 {
                out.push(format!("vlan({})", fmt_vlan_tci(tci, tci_m)));
            }
            let mut inner = Vec::new();
            format_level(k, m, depth + 1, &mut inner);
            out.push(format!("encap({})", inner.join(",")));
            return;
        }
    }

    let (et, et_m) = (be16(k.eth_type), be16(m.eth_type));
    if et_m != 0 {
        if et_m == 0xffff && et == ETH_TYPE_NONE {
            // OVS writes "no Ethernet II type" as a missing key with a mask.
            out.push(format!("eth_type(0/0x{et_m:04x})"));
        } else {
            out.push(fmt_eth_type(et, et_m));
        }
    }
    if et_m != 0xffff {
        return;
    }
    let mut l4 = None;
    match et {
        ETH_TYPE_IP => {
            let mut f = Fields::default();
            f.ipv4("src", &k.nw_src, &m.nw_src);
            f.ipv4("dst", &k.nw_dst, &m.nw_dst);
            f.dec("proto", k.nw_proto.into(), m.nw_proto.into(), 0xff);
            f.hex("tos", k.nw_tos.into(), m.nw_tos.into(), 0xff);
            f.dec("ttl", k.nw_ttl.into(), m.nw_ttl.into(), 0xff);
            f.frag(k.nw_frag, m.nw_frag);
            f.attr_if_any(out, "ipv4");
            if m.nw_proto == 0xff {
                l4 = Some(k.nw_proto);
            }
        }
        ETH_TYPE_IPV6 => {
            let mut f = Fields::default();
            f.ipv6("src", &k.nw_src, &m.nw_src);
            f.ipv6("dst", &k.nw_dst, &m.nw_dst);
            let lm = u32::from_be(m.ipv6_label) & IPV6_LABEL_MASK;
            let lk = u32::from_be(k.ipv6_label) & IPV6_LABEL_MASK;
            f.hex("label", lk.into(), lm.into(), IPV6_LABEL_MASK.into());
            f.dec("proto", k.nw_proto.into(), m.nw_proto.into(), 0xff);
            f.hex("tclass", k.nw_tos.into(), m.nw_tos.into(), 0xff);
            f.dec("hlimit", k.nw_ttl.into(), m.nw_ttl.into(), 0xff);
            f.frag(k.nw_frag, m.nw_frag);
            f.attr_if_any(out, "ipv6");
            if m.nw_proto == 0xff {
                l4 = Some(k.nw_proto);
            }
        }
        ETH_TYPE_ARP | ETH_TYPE_RARP => {
            let mut f = Fields::default();
            f.ipv4("sip", &k.nw_src, &m.nw_src);
            f.ipv4("tip", &k.nw_dst, &m.nw_dst);
            // OVS widens the one-byte opcode mask 0xff to 0xffff (exact).
            let op_m = if m.nw_proto == 0xff { 0xffff } else { m.nw_proto as u64 };
            f.dec("op", k.nw_proto.into(), op_m, 0xffff);
            f.mac("sha", &k.arp_sha, &m.arp_sha);
            f.mac("tha", &k.arp_tha, &m.arp_tha);
            f.attr_if_any(out, "arp");
        }
        _ => {}
    }
    let Some(proto) = l4 else { return };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let mut f = Fields::default();
            f.dec("src", be16(k.tp_src).into(), be16(m.tp_src).into(), 0xffff);
            f.dec("dst", be16(k.tp_dst).into(), be16(m.tp_dst).into(), 0xffff);
            let name = match proto {
                IPPROTO_TCP => "tcp",
                IPPROTO_UDP => "udp",
                _ => "sctp",
            };
            f.attr_if_any(out, name);
            if proto == IPPROTO_TCP {
                let fm = be16(m.tcp_flags) & TCP_FLAGS_MASK;
                let fk = be16(k.tcp_flags) & TCP_FLAGS_MASK;
                if fm != 0 {
                    out.push(format!("tcp_flags({})", fmt_tcp_flags(fk, fm)));
                }
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let v6 = et == ETH_TYPE_IPV6;
            if v6 != (proto == IPPROTO_ICMPV6) {
                return;
            }
            let mut f = Fields::default();
            let lo = |v: u16| (be16(v) & 0xff) as u64;
            f.dec("type", lo(k.tp_src), lo(m.tp_src), 0xff);
            f.dec("code", lo(k.tp_dst), lo(m.tp_dst), 0xff);
            f.attr_if_any(out, if v6 { "icmpv6" } else { "icmp" });
            if v6 {
                let mut f = Fields::default();
                f.ipv6("target", &k.nd_target, &m.nd_target);
                f.mac("sll", &k.arp_sha, &m.arp_sha);
                f.mac("tll", &k.arp_tha, &m.arp_tha);
                f.attr_if_any(out, "nd");
            }
        }
        _ => {}
    }
}

/// As OVS's format_flags / format_flags_masked with packet_tcp_flag_to_string.
fn fmt_tcp_flags(flags: u16, mask: u16) -> String {
    let mut s = String::new();
    if mask == TCP_FLAGS_MASK {
        if flags == 0 {
            return "0".to_string();
        }
        for (i, name) in TCP_FLAG_NAMES.iter().enumerate() {
            if flags & (1 << i) != 0 {
                if !s.is_empty() {
                    s.push('|');
                }
                s.push_str(name);
            }
        }
    } else {
        for (i, name) in TCP_FLAG_NAMES.iter().enumerate() {
            if mask & (1 << i) != 0 {
                s.push(if flags & (1 << i) != 0 { '+' } else { '-' });
                s.push_str(name);
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------

/// The header a set action belongs to, for merging.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SetHeader {
    Eth,
    Ipv4,
    Ipv6,
    /// L4 ports of the given IP protocol.
    Tp(u32),
}

/// (header, field index in OVS order) of a set action.
fn set_field(a: &Action) -> Option<(SetHeader, usize)> {
    Some(match a.kind {
        action::SET_ETH_SRC => (SetHeader::Eth, 0),
        action::SET_ETH_DST => (SetHeader::Eth, 1),
        action::SET_IPV4_SRC => (SetHeader::Ipv4, 0),
        action::SET_IPV4_DST => (SetHeader::Ipv4, 1),
        action::SET_IPV4_TOS => (SetHeader::Ipv4, 2),
        action::SET_IPV4_TTL => (SetHeader::Ipv4, 3),
        action::SET_IPV6_SRC => (SetHeader::Ipv6, 0),
        action::SET_IPV6_DST => (SetHeader::Ipv6, 1),
        action::SET_IPV6_TCLASS => (SetHeader::Ipv6, 2),
        action::SET_IPV6_HLIMIT => (SetHeader::Ipv6, 3),
        action::SET_TP_SRC => (SetHeader::Tp(a.arg), 0),
        action::SET_TP_DST => (SetHeader::Tp(a.arg), 1),
        _ => return None,
    })
}

fn act(kind: u8, arg: u32, data: &[u8]) -> Action {
    let mut a = Action { kind, arg, ..Default::default() };
    let n = data.len().min(a.data.len());
    a.data[..n].copy_from_slice(&data[..n]);
    a
}

/// Parse an action list: "2", "2,3", "drop", "push_vlan(vid=10,pcp=0)",
/// "pop_vlan", "set(eth(src=..,dst=..))", "set(ipv4(src=..,dst=..,tos=..,ttl=..))",
/// "set(ipv6(src=..,dst=..,tclass=..,hlimit=..))", "set(tcp(src=..,dst=..))",
/// "set(udp(..))", "set(sctp(..))", "userspace(pid=N)", "dec_ttl" /
/// "dec_ttl(le_1(drop))", and combinations separated by commas. Errors for
/// more than `MAX_ACTIONS` actions. See the module documentation for the
/// encoding.
pub fn parse_actions(s: &str) -> Result<Vec<Action>, ParseError> {
    let mut lx = Lexer::new(s);
    let mut out = Vec::new();
    let mut drop_at = None;
    let mut n_items = 0;
    loop {
        lx.skip_delims();
        if lx.at_end() {
            break;
        }
        let start = lx.pos;
        n_items += 1;
        if parse_action(&mut lx, &mut out)? {
            drop_at = Some(start);
        }
        if out.len() > MAX_ACTIONS {
            return Err(perr(
                start,
                format!("too many actions at \"{}\": a flow holds at most {MAX_ACTIONS}", lx.since(start)),
            ));
        }
        match lx.peek() {
            None => {}
            Some(c) if DELIMS.contains(&c) => {}
            Some(_) => {
                return Err(perr(lx.pos, format!("expected ',' after \"{}\", found {}", lx.since(start), lx.here())));
            }
        }
    }
    if let Some(pos) = drop_at
        && n_items > 1
    {
        return Err(perr(pos, "\"drop\" must be the only action"));
    }
    Ok(out)
}

const UNSUPPORTED_ACTIONS: &[&str] = &[
    "recirc",
    "ct",
    "ct_clear",
    "trunc",
    "clone",
    "sample",
    "meter",
    "hash",
    "push_mpls",
    "pop_mpls",
    "add_mpls",
    "tnl_push",
    "tnl_pop",
    "check_pkt_len",
    "lb_output",
    "push_eth",
    "pop_eth",
    "push_nsh",
    "pop_nsh",
    "psample",
];

/// Parses one action into `out`; returns true for `drop`.
fn parse_action(lx: &mut Lexer<'_>, out: &mut Vec<Action>) -> Result<bool, ParseError> {
    let start = lx.pos;
    if matches!(lx.peek(), Some(c) if c.is_ascii_digit()) {
        let tok = lx.ident();
        let port = num_max(tok, u32::MAX as u64, "port number")
            .map_err(|e| perr(start, format!("output to \"{tok}\": {e}")))?;
        out.push(act(action::OUTPUT, port as u32, &[]));
        return Ok(false);
    }
    let name = lx.ident();
    match name {
        "drop" => return Ok(true),
        "pop_vlan" => out.push(act(action::POP_VLAN, 0, &[])),
        "dec_ttl" => {
            if lx.eat(b'(') {
                // Only the form OVS prints for "drop when TTL <= 1".
                let ok = lx.s[lx.pos..].starts_with("le_1(") && {
                    lx.pos += 5;
                    lx.skip_delims();
                    if lx.s[lx.pos..].starts_with("drop") {
                        lx.pos += 4;
                    }
                    lx.skip_delims();
                    lx.eat(b')') && lx.eat(b')')
                };
                if !ok {
                    return Err(perr(
                        lx.pos,
                        format!(
                            "expected \"dec_ttl(le_1(drop))\" after \"{}\", found {} \
                             (only dropping is supported when the TTL runs out)",
                            lx.since(start),
                            lx.here()
                        ),
                    ));
                }
            }
            out.push(act(action::DEC_TTL, 0, &[]));
        }
        "push_vlan" | "userspace" | "set" => {
            if !lx.eat(b'(') {
                return Err(perr(lx.pos, format!("expected '(' after \"{name}\", found {}", lx.here())));
            }
            match name {
                "push_vlan" => out.push(parse_push_vlan(lx, start)?),
                "userspace" => {
                    let mut pid = None;
                    for f in parse_fields(lx, start)? {
                        if f.name != "pid" {
                            return Err(perr(
                                f.name_pos,
                                format!(
                                    "userspace({}={}): unsupported argument \"{}\" (only pid=N)",
                                    f.name, f.value, f.name
                                ),
                            ));
                        }
                        pid = Some(
                            plain_num(f.value, u32::MAX as u64)
                                .map_err(|e| perr(f.pos, format!("userspace(pid={}): {e}", f.value)))?,
                        );
                    }
                    let pid = pid.ok_or_else(|| perr(start, format!("\"{}\": missing pid=N", lx.since(start))))?;
                    out.push(act(action::USERSPACE, pid as u32, &[]));
                }
                _ => parse_set(lx, start, out)?,
            }
        }
        "" => {
            return Err(perr(start, format!("expected an action, found {}", lx.here())));
        }
        _ => {
            if UNSUPPORTED_ACTIONS.contains(&name) {
                return Err(perr(start, format!("unsupported action \"{name}\"")));
            }
            return Err(perr(start, format!("unknown action \"{name}\"")));
        }
    }
    Ok(false)
}

fn parse_push_vlan(lx: &mut Lexer<'_>, start: usize) -> Result<Action, ParseError> {
    let (mut tpid, mut vid, mut pcp, mut cfi) = (ETH_TYPE_VLAN_8021Q as u64, None, 0, 1);
    for f in parse_fields(lx, start)? {
        let max = match f.name {
            "tpid" => 0xffff,
            "vid" => 0xfff,
            "pcp" => 7,
            "cfi" => 1,
            _ => return Err(unknown_field(&f, "push_vlan", "tpid, vid, pcp, cfi")),
        };
        let v = plain_num(f.value, max).map_err(|e| perr(f.pos, format!("push_vlan({}={}): {e}", f.name, f.value)))?;
        match f.name {
            "tpid" => tpid = v,
            "vid" => vid = Some(v),
            "pcp" => pcp = v,
            _ => cfi = v,
        }
    }
    let vid = vid.ok_or_else(|| perr(start, format!("\"{}\": missing vid=N", lx.since(start))))?;
    let tci = (pcp << 13) | (cfi << 12) | vid;
    Ok(act(action::PUSH_VLAN, ((tpid << 16) | tci) as u32, &[]))
}

/// `set(HEADER(field=value,...))`, after `set(`.
fn parse_set(lx: &mut Lexer<'_>, start: usize, out: &mut Vec<Action>) -> Result<(), ParseError> {
    let hpos = lx.pos;
    let header = lx.ident();
    let (hdr, names): (SetHeader, &[&str]) = match header {
        "eth" => (SetHeader::Eth, &["src", "dst"]),
        "ipv4" => (SetHeader::Ipv4, &["src", "dst", "tos", "ttl"]),
        "ipv6" => (SetHeader::Ipv6, &["src", "dst", "tclass", "hlimit"]),
        "tcp" => (SetHeader::Tp(IPPROTO_TCP.into()), &["src", "dst"]),
        "udp" => (SetHeader::Tp(IPPROTO_UDP.into()), &["src", "dst"]),
        "sctp" => (SetHeader::Tp(IPPROTO_SCTP.into()), &["src", "dst"]),
        "" => {
            return Err(perr(hpos, format!("expected a header name after \"set(\", found {}", lx.here())));
        }
        _ if KNOWN_ATTRS.contains(&header) || UNSUPPORTED_ATTRS.contains(&header) => {
            return Err(perr(hpos, format!("set({header}(...)): setting \"{header}\" is unsupported")));
        }
        _ => return Err(perr(hpos, format!("set(...): unknown header \"{header}\""))),
    };
    if !lx.eat(b'(') {
        return Err(perr(lx.pos, format!("expected '(' after \"{}\", found {}", lx.since(start), lx.here())));
    }
    let mut slots: [Option<Action>; 4] = [None; 4];
    for f in parse_fields(lx, start)? {
        let ctx = format!("set({header}({}={}))", f.name, f.value);
        let Some(idx) = names.iter().position(|n| *n == f.name) else {
            let unsettable = match hdr {
                SetHeader::Ipv4 => ["proto", "frag"].contains(&f.name),
                SetHeader::Ipv6 => ["label", "proto", "frag"].contains(&f.name),
                _ => false,
            };
            let msg = if unsettable {
                format!("{ctx}: field \"{}\" cannot be set", f.name)
            } else {
                format!("{ctx}: unknown field \"{}\" (expected {})", f.name, names.join(", "))
            };
            return Err(perr(f.name_pos, msg));
        };
        if slots[idx].is_some() {
            return Err(perr(f.name_pos, format!("{ctx}: field \"{}\" given twice", f.name)));
        }
        let e = |e: String| perr(f.pos, format!("{ctx}: {e}"));
        let unmasked = || perr(f.pos, format!("{ctx}: masked set of \"{}\" is not supported", f.name));
        let a = match (hdr, idx) {
            (SetHeader::Eth, _) => {
                let (v, m) = masked_mac(f.value).map_err(e)?;
                if m != [0xff; 6] {
                    return Err(unmasked());
                }
                let kind = if idx == 0 { action::SET_ETH_SRC } else { action::SET_ETH_DST };
                act(kind, 0, &v)
            }
            (SetHeader::Ipv4, 0 | 1) => {
                let (v, m) = masked_ipv4(f.value).map_err(e)?;
                if m != [0xff; 4] {
                    return Err(unmasked());
                }
                let kind = if idx == 0 { action::SET_IPV4_SRC } else { action::SET_IPV4_DST };
                act(kind, 0, &v)
            }
            (SetHeader::Ipv6, 0 | 1) => {
                let (v, m) = masked_ipv6(f.value).map_err(e)?;
                if m != [0xff; 16] {
                    return Err(unmasked());
                }
                let kind = if idx == 0 { action::SET_IPV6_SRC } else { action::SET_IPV6_DST };
                act(kind, 0, &v)
            }
            (SetHeader::Ipv4 | SetHeader::Ipv6, _) => {
                let (v, m) = masked_num(f.value, 0xff, 0xff).map_err(e)?;
                let kind = match (hdr, idx) {
                    (SetHeader::Ipv4, 2) => action::SET_IPV4_TOS,
                    (SetHeader::Ipv4, _) => action::SET_IPV4_TTL,
                    (_, 2) => action::SET_IPV6_TCLASS,
                    _ => action::SET_IPV6_HLIMIT,
                };
                act(kind, ((v & m) | (m << 8)) as u32, &[])
            }
            (SetHeader::Tp(proto), _) => {
                let (v, m) = masked_num(f.value, 0xffff, 0xffff).map_err(e)?;
                if m != 0xffff {
                    return Err(unmasked());
                }
                let kind = if idx == 0 { action::SET_TP_SRC } else { action::SET_TP_DST };
                act(kind, proto, &(v as u16).to_be_bytes())
            }
        };
        slots[idx] = Some(a);
    }
    if !lx.eat(b')') {
        return Err(perr(lx.pos, format!("expected ')' after \"{}\"", lx.since(start))));
    }
    let before = out.len();
    out.extend(slots.iter().flatten());
    if out.len() == before {
        return Err(perr(start, format!("\"{}\": nothing to set", lx.since(start))));
    }
    Ok(())
}

/// Format like ovs-dpctl: "drop" for an empty list, else comma-separated,
/// e.g. "push_vlan(vid=10,pcp=0),2".
pub fn format_actions(a: &[Action]) -> String {
    if a.is_empty() {
        return "drop".to_string();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < a.len() {
        let Some((hdr, _)) = set_field(&a[i]) else {
            parts.push(format_action(&a[i]));
            i += 1;
            continue;
        };
        // Merge a run of sets of this header whose fields come in OVS order,
        // so that parsing the text gives back exactly the same actions.
        let mut slots: [Option<&Action>; 4] = [None; 4];
        let mut last = None;
        while i < a.len() {
            match set_field(&a[i]) {
                Some((h, idx)) if h == hdr && last.is_none_or(|l| idx > l) => {
                    slots[idx] = Some(&a[i]);
                    last = Some(idx);
                    i += 1;
                }
                _ => break,
            }
        }
        parts.push(format_set(hdr, &slots));
    }
    parts.join(",")
}

fn format_set(hdr: SetHeader, slots: &[Option<&Action>; 4]) -> String {
    let mut f = Vec::new();
    let byte = |name: &str, a: &Action, hex: bool| {
        let (v, m) = (a.arg & 0xff, (a.arg >> 8) & 0xff);
        let mut s = if hex { format!("{name}={}", hex0(v.into())) } else { format!("{name}={v}") };
        if m != 0xff {
            let _ = write!(s, "/{}", hex0(m.into()));
        }
        s
    };
    let name = match hdr {
        SetHeader::Eth => {
            for (a, n) in slots.iter().zip(["src", "dst"]) {
                if let Some(a) = a {
                    let mac: [u8; 6] = std::array::from_fn(|i| a.data[i]);
                    f.push(format!("{n}={}", fmt_mac(&mac)));
                }
            }
            "eth".to_string()
        }
        SetHeader::Ipv4 => {
            for (i, a) in slots.iter().enumerate() {
                let Some(a) = a else { continue };
                f.push(match i {
                    0 => format!("src={}", fmt_ipv4(&a.data)),
                    1 => format!("dst={}", fmt_ipv4(&a.data)),
                    2 => byte("tos", a, true),
                    _ => byte("ttl", a, false),
                });
            }
            "ipv4".to_string()
        }
        SetHeader::Ipv6 => {
            for (i, a) in slots.iter().enumerate() {
                let Some(a) = a else { continue };
                f.push(match i {
                    0 => format!("src={}", fmt_ipv6(&a.data)),
                    1 => format!("dst={}", fmt_ipv6(&a.data)),
                    2 => byte("tclass", a, true),
                    _ => byte("hlimit", a, false),
                });
            }
            "ipv6".to_string()
        }
        SetHeader::Tp(proto) => {
            for (a, n) in slots.iter().zip(["src", "dst"]) {
                if let Some(a) = a {
                    f.push(format!("{n}={}", u16::from_be_bytes([a.data[0], a.data[1]])));
                }
            }
            match proto {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                132 => "sctp".to_string(),
                // Not produced by parse_actions: SET_TP_* must name its protocol.
                p => format!("l4_proto_{p}"),
            }
        }
    };
    format!("set({name}({}))", f.join(","))
}

fn format_action(a: &Action) -> String {
    match a.kind {
        action::OUTPUT => a.arg.to_string(),
        action::USERSPACE => format!("userspace(pid={})", a.arg),
        action::POP_VLAN => "pop_vlan".to_string(),
        action::DEC_TTL => "dec_ttl(le_1(drop))".to_string(),
        action::PUSH_VLAN => {
            let (tpid, tci) = ((a.arg >> 16) as u16, a.arg as u16);
            let mut s = "push_vlan(".to_string();
            if tpid != ETH_TYPE_VLAN_8021Q {
                let _ = write!(s, "tpid=0x{tpid:04x},");
            }
            s.push_str(&fmt_vlan_tci(tci, 0xffff));
            s.push(')');
            s
        }
        k => format!("unknown_action(kind={k},arg={:#x})", a.arg),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = "in_port(1),eth(src=00:01:02:03:04:05,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0,proto=17,frag=no),udp(dst=53)";

    fn pf(s: &str) -> FlowMatch {
        parse_flow(s).unwrap_or_else(|e| panic!("parse_flow({s:?}): {e}"))
    }

    /// format(parse(s)) == s, and parse(format(m)) == m.
    fn roundtrip(s: &str) -> FlowMatch {
        let m = pf(s);
        let out = format_flow(&m);
        assert_eq!(out, s, "format(parse({s}))");
        assert_eq!(pf(&out), m, "parse(format(m)) for {s}");
        m
    }

    fn err(s: &str) -> ParseError {
        match parse_flow(s) {
            Ok(m) => panic!("parse_flow({s:?}) succeeded: {}", format_flow(&m)),
            Err(e) => e,
        }
    }

    fn aerr(s: &str) -> ParseError {
        match parse_actions(s) {
            Ok(a) => panic!("parse_actions({s:?}) succeeded: {}", format_actions(&a)),
            Err(e) => e,
        }
    }

    fn pa(s: &str) -> Vec<Action> {
        parse_actions(s).unwrap_or_else(|e| panic!("parse_actions({s:?}): {e}"))
    }

    fn act_roundtrip(s: &str) -> Vec<Action> {
        let a = pa(s);
        let out = format_actions(&a);
        assert_eq!(out, s, "format(parse({s}))");
        assert_eq!(pa(&out), a);
        a
    }

    #[test]
    fn canonical_example() {
        let m = roundtrip(CANONICAL);
        assert_eq!(m.key.in_port, 1);
        assert_eq!(m.mask.in_port, u32::MAX);
        assert_eq!(m.key.eth_src, [0, 1, 2, 3, 4, 5]);
        assert_eq!(m.mask.eth_dst, [0xff; 6]);
        assert_eq!(m.key.eth_type, 0x0800u16.to_be());
        assert_eq!(m.mask.eth_type, 0xffff);
        assert_eq!(&m.key.nw_src[..4], &[10, 1, 0, 0]);
        assert_eq!(&m.mask.nw_src[..4], &[255, 255, 0, 0]);
        assert_eq!(m.mask.nw_dst, [0; 16]);
        assert_eq!((m.key.nw_proto, m.mask.nw_proto), (17, 0xff));
        assert_eq!((m.key.nw_frag, m.mask.nw_frag), (0, FRAG_MASK));
        assert_eq!(m.key.tp_dst, 53u16.to_be());
        assert_eq!(m.mask.tp_dst, 0xffff);
        assert_eq!(m.mask.tp_src, 0);
        assert_eq!(m.key.to_owned().tp_dst.to_ne_bytes(), [0, 53]);
    }

    #[test]
    fn empty_and_wildcards() {
        let m = pf("");
        assert_eq!(m.mask, FlowKey::zeroed());
        assert_eq!(m.key, FlowKey::zeroed());
        assert_eq!(format_flow(&m), "eth()");
        assert_eq!(pf("eth()"), m);
        assert_eq!(pf("  ,, \n"), m);
        // Wildcarded attributes disappear; eth() stays, as in a kernel dump.
        assert_eq!(
            format_flow(&pf("in_port(2),eth(),eth_type(0x0800),ipv4(),udp()")),
            "in_port(2),eth(),eth_type(0x0800)"
        );
        roundtrip("in_port(2),eth(),eth_type(0x0800),ipv4(frag=no)");
        // Tolerated metadata that is always zero here.
        let m2 = pf(
            "recirc_id(0),dp_hash(0/0),skb_priority(0),skb_mark(0),ct_zone(0),ct_mark(0),packet_type(ns=0,id=0),in_port(2),eth()",
        );
        assert_eq!(format_flow(&m2), "in_port(2),eth()");
        // Key bits outside the mask are dropped.
        let m3 = pf("eth(src=00:01:02:03:04:05/ff:ff:ff:00:00:00)");
        assert_eq!(m3.key.eth_src, [0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn every_attribute_roundtrips() {
        for s in [
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x1234)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=5,tos=0x80,ttl=128,frag=no)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=5,tos=0x81,ttl=128,frag=first)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=5,tos=0x80,ttl=128,frag=later)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=6,tos=0,ttl=128,frag=no),tcp(src=80,dst=8080)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=6,frag=no),tcp(dst=22),tcp_flags(syn|ack)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=6,frag=no),tcp_flags(0)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=6,frag=no),tcp_flags(+syn-ack)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=6,frag=no),tcp_flags(fin|syn|rst|psh|ack|urg|ece|cwr|ns|[200]|[400]|[800])",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=17,tos=0,ttl=128,frag=no),udp(src=81,dst=6632)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=132,frag=no),sctp(src=1,dst=2)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=1,tos=0,ttl=128,frag=no),icmp(type=1,code=2)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x86dd),ipv6(src=::1,dst=::2,label=0,proto=10,tclass=0x70,hlimit=128,frag=no)",
            "in_port(1),eth(),eth_type(0x86dd),ipv6(src=2001:db8::1,dst=fe80::1:2:3:4,label=0x12345,proto=6,tclass=0,hlimit=64,frag=no),tcp(src=80,dst=8080)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x86dd),ipv6(src=::1,dst=::2,label=0,proto=17,tclass=0,hlimit=128,frag=no),udp(src=6630,dst=22)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x86dd),ipv6(src=::1,dst=::2,label=0,proto=58,tclass=0,hlimit=128,frag=no),icmpv6(type=1,code=2)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x86dd),ipv6(src=::1,dst=::2,label=0,proto=58,tclass=0,hlimit=128,frag=no),icmpv6(type=136,code=0),nd(target=::3,sll=00:05:06:07:08:09,tll=00:0a:0b:0c:0d:0e)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0806),arp(sip=1.2.3.4,tip=5.6.7.8,op=1,sha=00:0f:10:11:12:13,tha=00:14:15:16:17:18)",
            "in_port(1),eth(),eth_type(0x8035),arp(op=3)",
            "in_port(7),eth(),eth_type(0/0xffff)",
        ] {
            roundtrip(s);
        }
    }

    #[test]
    fn masked_fields_roundtrip() {
        for s in [
            "in_port(1/0xff),eth(src=00:01:02:03:04:00/ff:ff:ff:ff:ff:f0,dst=10:11:12:13:14:10/ff:ff:ff:ff:ff:f0)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x1230/0xfff0)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.0/255.255.255.0,dst=172.16.0.0/255.255.255.0,proto=0/0xf0,tos=0x80/0xf0,ttl=128/0xf0,frag=no)",
            "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=6,tos=0,ttl=128,frag=no),tcp(src=0/0xff00,dst=144/0xff)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no),udp(src=0/0xff00,dst=8/0xff)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(proto=1,frag=no),icmp(type=0/0xf0,code=2)",
            "in_port(1),eth(),eth_type(0x86dd),ipv6(src=::1/::255,dst=::2/::ff,label=0/0xf0,proto=0/0xf0,tclass=0x70/0xf0,hlimit=128/0xf0,frag=no)",
            "in_port(1),eth(),eth_type(0x86dd),ipv6(src=2001:db8::/ffff:ffff::,proto=58,frag=no),icmpv6(type=135,code=0),nd(target=::10/::250,sll=00:05:06:07:08:00/ff:ff:ff:ff:ff:00)",
            "in_port(1),eth(),eth_type(0x0806),arp(sip=1.2.3.0/255.255.255.250,tip=5.6.7.0/255.255.255.250,op=0/0xf0,sha=00:0f:10:11:12:00/ff:ff:ff:ff:ff:00,tha=00:14:15:16:17:00/ff:ff:ff:ff:ff:00)",
            "in_port(1),eth(),eth_type(0x0800),ipv4(tos=0/0xfc,frag=no)",
        ] {
            roundtrip(s);
        }
        // Unmasked key bits are dropped, so the value prints masked.
        assert_eq!(
            format_flow(&pf("eth_type(0x0800),ipv4(proto=17),udp(src=81/0xff00,dst=6632/0xff)")),
            "eth(),eth_type(0x0800),ipv4(proto=17),udp(src=0/0xff00,dst=232/0xff)"
        );
        // Prefix-length masks are accepted and print as netmasks.
        assert_eq!(
            format_flow(&pf("eth_type(0x0800),ipv4(src=10.1.2.3/16)")),
            "eth(),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0)"
        );
        assert_eq!(
            format_flow(&pf("eth_type(0x86dd),ipv6(dst=2001:db8::1/32)")),
            "eth(),eth_type(0x86dd),ipv6(dst=2001:db8::/ffff:ffff::)"
        );
        // tcp_flags numeric forms.
        let m = pf("eth_type(0x0800),ipv4(proto=6),tcp_flags(0x12/0x12)");
        assert_eq!(m.key.tcp_flags, 0x12u16.to_be());
        assert_eq!(format_flow(&m), "eth(),eth_type(0x0800),ipv4(proto=6),tcp_flags(+syn+ack)");
        let m = pf("eth_type(0x0800),ipv4(proto=6),tcp_flags(0x12)");
        assert_eq!(format_flow(&m), "eth(),eth_type(0x0800),ipv4(proto=6),tcp_flags(syn|ack)");
        // Exact ICMP type/code use a one-byte mask, as OVS.
        let m = pf("eth_type(0x0800),ipv4(proto=1),icmp(type=8,code=0)");
        assert_eq!((m.key.tp_src, m.mask.tp_src), (8u16.to_be(), 0xffu16.to_be()));
        assert_eq!(m.mask.tp_dst, 0xffu16.to_be());
        // ARP op in nw_proto.
        let m = pf("eth_type(0x0806),arp(op=2)");
        assert_eq!((m.key.nw_proto, m.mask.nw_proto), (2, 0xff));
        // IPv6 label.
        let m = pf("eth_type(0x86dd),ipv6(label=0x12345)");
        assert_eq!(m.key.ipv6_label, 0x12345u32.to_be());
        assert_eq!(m.mask.ipv6_label, 0xfffffu32.to_be());
    }

    #[test]
    fn vlan_single_and_double() {
        let s = "in_port(1),eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x8100),vlan(vid=10,pcp=0),encap(eth_type(0x0800),ipv4(src=35.8.2.41,dst=172.16.0.20,proto=6,tos=0,ttl=128,frag=no),tcp(src=80,dst=8080))";
        let m = roundtrip(s);
        assert_eq!(m.key.vlan_tci[0], (VLAN_CFI | 10).to_be());
        assert_eq!(m.mask.vlan_tci[0], 0xffff);
        assert_eq!(m.key.vlan_tpid[0], 0x8100u16.to_be());
        assert_eq!(m.mask.vlan_tpid[0], 0xffff);
        assert_eq!(m.key.eth_type, 0x0800u16.to_be());
        assert_eq!(m.mask.vlan_tci[1], 0);

        let s = "in_port(1),eth(),eth_type(0x88a8),vlan(vid=100,pcp=3),encap(eth_type(0x8100),vlan(vid=20,pcp=0),encap(eth_type(0x86dd),ipv6(proto=17,frag=no),udp(dst=53)))";
        let m = roundtrip(s);
        assert_eq!(m.key.vlan_tpid, [0x88a8u16.to_be(), 0x8100u16.to_be()]);
        assert_eq!(m.key.vlan_tci, [(VLAN_CFI | 3 << 13 | 100).to_be(), (VLAN_CFI | 20).to_be()]);
        assert_eq!(m.key.eth_type, 0x86ddu16.to_be());

        for s in [
            "in_port(1),eth(),eth_type(0x8100),vlan(vid=96/0xff0,pcp=6/0x6),encap(eth_type(0x0800))",
            "in_port(1),eth(),eth_type(0x8100),vlan(vid=5,pcp=0,cfi=0),encap()",
            "in_port(1),eth(),eth_type(0x8100),vlan(),encap(eth_type(0x0806),arp(op=1))",
            "in_port(1),eth(),eth_type(0x8100),encap(eth_type(0x0800))",
            "in_port(1),eth(),vlan(vid=7,pcp=0),encap(eth_type(0x0800))",
            "in_port(1),eth(),eth_type(0x8100),vlan(vid=7,pcp=0),encap(eth_type(0/0xffff))",
            // A truncated tag: 0x8100 as the (innermost) ethertype.
            "in_port(1),eth(),eth_type(0x8100)",
        ] {
            roundtrip(s);
        }
        // tci= form, and eth_type after vlan() is still the TPID.
        let m = pf("vlan(tci=0x100a/0x1fff),eth_type(0x8100),encap(eth_type(0x0800))");
        assert_eq!((m.key.vlan_tci[0], m.mask.vlan_tci[0]), (0x100au16.to_be(), 0x1fffu16.to_be()));
        assert_eq!(format_flow(&m), "eth(),eth_type(0x8100),vlan(vid=10),encap(eth_type(0x0800))");
        // A mask that only says "untagged" prints nothing, as in OVS.
        let mut m = pf("in_port(1),eth_type(0x0800)");
        m.mask.vlan_tci[0] = 0xffff;
        assert_eq!(format_flow(&m), "in_port(1),eth(),eth_type(0x0800)");
    }

    #[test]
    fn vlan_errors() {
        let e = err(
            "eth_type(0x8100),vlan(vid=1),encap(eth_type(0x8100),vlan(vid=2),encap(eth_type(0x8100),vlan(vid=3),encap()))",
        );
        assert!(e.msg.contains("too many VLAN headers"), "{e}");
        let e = err("eth_type(0x8100),vlan(vid=1),eth_type(0x0800),ipv4(frag=no)");
        assert!(e.msg.contains("duplicate attribute \"eth_type\""), "{e}");
        let e = err("eth_type(0x8100),vlan(vid=1),encap(eth_type(0x0800)),eth_type(0x0800)");
        assert!(e.msg.contains("duplicate"), "{e}");
        let e = err("eth_type(0x0800),vlan(vid=1),ipv4(frag=no),encap()");
        assert_eq!(e.msg, "ipv4(...) must be inside encap(...) when the frame has a VLAN tag");
        let e = err("vlan(vid=4096)");
        assert_eq!(e.msg, "vlan(vid=4096): value out of range");
        assert_eq!(e.pos, 9);
        let e = err("vlan(vid=1,foo=2)");
        assert!(e.msg.contains("unknown field \"foo\""), "{e}");
        let e = err("encap(eth_type(0x0800)");
        assert_eq!(e.msg, "expected ')' after \"encap(eth_type(0x0800)\"");
    }

    #[test]
    fn ipv6_formatting_matches_inet_ntop() {
        let f = |s: &str| fmt_ipv6(&ipv6(s).unwrap());
        assert_eq!(f("::"), "::");
        assert_eq!(f("::1"), "::1");
        assert_eq!(f("1::"), "1::");
        assert_eq!(f("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
        assert_eq!(f("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
        assert_eq!(f("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(f("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(f("::255"), "::255");
        assert_eq!(f("ffff:ffff:ffff:ffff::"), "ffff:ffff:ffff:ffff::");
        assert_eq!(f("fe80::1:0:0:0:1"), "fe80:0:0:1::1");
    }

    #[test]
    fn flow_errors_name_tokens() {
        let e = err("ipv5(src=1.2.3.4)");
        assert_eq!(e.msg, "unknown attribute \"ipv5\"");
        assert_eq!(e.pos, 0);
        let e = err("in_port(1),eth_type(0x0800),ipv4(src=10.0.0.300)");
        assert_eq!(e.msg, "ipv4(src=10.0.0.300): bad IPv4 address \"10.0.0.300\"");
        assert_eq!(e.pos, 37);
        let e = err("eth(src=zz:01:02:03:04:05)");
        assert_eq!(e.msg, "eth(src=zz:01:02:03:04:05): bad MAC address \"zz:01:02:03:04:05\"");
        let e = err("eth(src=00:01:02:03:04:05/ff:ff)");
        assert_eq!(e.msg, "eth(src=00:01:02:03:04:05/ff:ff): bad MAC mask \"ff:ff\"");
        let e = err("eth_type(0x0800),ipv4(proto=17),udp(dst=53");
        assert_eq!(e.msg, "expected ')' after \"udp(dst=53\"");
        let e = err("eth_type(0x0800),ipv4(proto=17),udp(dst=70000)");
        assert_eq!(e.msg, "udp(dst=70000): value out of range");
        let e = err("eth_type(0x0800),ipv4(proto=17),udp(dst=5/0x10000)");
        assert_eq!(e.msg, "udp(dst=5/0x10000): mask out of range");
        let e = err("eth_type(0x0800),ipv4(proto=17),udp(dst=abc)");
        assert!(e.msg.starts_with("udp(dst=abc): bad number \"abc\""), "{e}");
        let e = err("in_port(1) eth_type(0x0800) ipv4(ttl=300)");
        assert_eq!(e.msg, "ipv4(ttl=300): value out of range");
        let e = err("in_port");
        assert_eq!(e.msg, "expected '(' after \"in_port\", found end of input");
        let e = err("in_port(1)eth()");
        assert_eq!(e.msg, "expected ',' after \"in_port(1)\", found \"eth\"");
        let e = err("in_port(1),in_port(2)");
        assert_eq!(e.msg, "duplicate attribute \"in_port\"");
        assert_eq!(e.pos, 11);
        let e = err("recirc_id(5)");
        assert_eq!(e.msg, "recirc_id(5): unsupported (only 0 is accepted)");
        let e = err("tunnel(tun_id=0x1)");
        assert_eq!(e.msg, "unsupported attribute \"tunnel\"");
        let e = err("eth(src)");
        assert!(e.msg.contains("expected '=' after \"eth(src\""), "{e}");
        let e = err("eth(foo=1)");
        assert!(e.msg.contains("unknown field \"foo\" (expected src, dst)"), "{e}");
        let e = err("eth_type(0x0800),ipv4(frag=maybe)");
        assert!(e.msg.starts_with("ipv4(frag=maybe): bad fragment type \"maybe\""), "{e}");
        let e = err("eth_type(0x0800),ipv4(proto=6),tcp_flags(syn|foo)");
        assert_eq!(e.msg, "tcp_flags(syn|foo): unknown TCP flag \"foo\"");
        let e = err("eth_type(0x0800),ipv4(proto=6),tcp_flags(+syn+syn)");
        assert!(e.msg.contains("given twice"), "{e}");
        let e = err(")");
        assert!(e.msg.contains("expected an attribute name, found \")\""), "{e}");
        // Prerequisites.
        assert_eq!(err("ipv4(src=1.2.3.4)").msg, "ipv4(...) requires eth_type(0x0800)");
        assert_eq!(err("eth_type(0x0800),ipv6(src=::1)").msg, "ipv6(...) requires eth_type(0x86dd)");
        assert_eq!(
            err("eth_type(0x0800),ipv4(proto=17),tcp(dst=80)").msg,
            "tcp(...) requires ipv4(proto=6) or ipv6(proto=6)"
        );
        assert_eq!(err("eth_type(0x0800),udp(dst=80)").msg, "udp(...) requires ipv4(proto=17) or ipv6(proto=17)");
        assert_eq!(
            err("eth_type(0x86dd),ipv6(proto=1),icmp(type=8)").msg,
            "icmp(...) requires eth_type(0x0800) and ipv4(proto=1)"
        );
        assert_eq!(err("eth_type(0x0800),arp(op=1)").msg, "arp(...) requires eth_type(0x0806) or eth_type(0x8035)");
        assert!(err("eth_type(0x86dd),ipv6(proto=6),nd(target=::1)").msg.starts_with("nd(...) requires"));
        // Error messages are one line.
        assert!(!err("eth(src=\n)").to_string().contains('\n'));
    }

    #[test]
    fn actions_roundtrip() {
        for s in [
            "drop",
            "2",
            "2,3",
            "1,2,3",
            "push_vlan(vid=10,pcp=0)",
            "push_vlan(vid=10,pcp=0),2",
            "push_vlan(vid=13,pcp=5,cfi=0)",
            "push_vlan(tpid=0x88a8,vid=13,pcp=5)",
            "push_vlan(tpid=0x9100,vid=13,pcp=5,cfi=0)",
            "pop_vlan",
            "pop_vlan,pop_vlan,1",
            "set(eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15))",
            "set(eth(src=00:01:02:03:04:05))",
            "set(eth(dst=10:11:12:13:14:15)),3",
            "set(ipv4(src=35.8.2.41,dst=172.16.0.20,tos=0x80,ttl=128))",
            "set(ipv4(tos=0/0x3))",
            "set(ipv4(tos=0x80/0xfc))",
            "set(ipv4(ttl=63))",
            "set(ipv4(ttl=0/0xf0))",
            "set(ipv6(src=::1,dst=2001:db8::2,tclass=0x70,hlimit=128))",
            "set(ipv6(tclass=0x70/0x70))",
            "set(tcp(src=80,dst=8080))",
            "set(tcp(dst=8080))",
            "set(udp(src=81,dst=6632))",
            "set(udp(src=81))",
            "set(sctp(src=82,dst=6633))",
            "userspace(pid=6633)",
            "dec_ttl(le_1(drop)),2",
            "set(eth(src=00:01:02:03:04:05)),set(ipv4(dst=1.2.3.4,ttl=63)),set(tcp(dst=80)),push_vlan(vid=1,pcp=2),3,userspace(pid=1)",
            // Two sets of the same field stay apart, and so do fields out of order.
            "set(ipv4(ttl=64)),set(ipv4(src=1.1.1.1))",
            "set(ipv4(src=1.1.1.1)),set(ipv4(src=2.2.2.2))",
            // Different L4 protocols stay apart.
            "set(tcp(src=1)),set(udp(src=2))",
        ] {
            act_roundtrip(s);
        }
        assert!(pa("").is_empty());
        assert!(pa("drop").is_empty());
        assert_eq!(format_actions(&[]), "drop");
    }

    #[test]
    fn action_encoding() {
        let a = pa("5");
        assert_eq!((a[0].kind, a[0].arg), (action::OUTPUT, 5));
        let a = pa("userspace(pid=4242)");
        assert_eq!((a[0].kind, a[0].arg), (action::USERSPACE, 4242));
        let a = pa("push_vlan(vid=10,pcp=0)");
        assert_eq!((a[0].kind, a[0].arg), (action::PUSH_VLAN, 0x8100_0000 | 0x100a));
        let a = pa("push_vlan(tpid=0x88a8,vid=10,pcp=5)");
        assert_eq!(a[0].arg, 0x88a8_0000 | 5 << 13 | 0x1000 | 10);
        let a = pa("push_vlan(vid=10,pcp=0,cfi=0)");
        assert_eq!(a[0].arg & 0xffff, 10);
        let a = pa("set(eth(dst=10:11:12:13:14:15,src=00:01:02:03:04:05))");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].kind, action::SET_ETH_SRC);
        assert_eq!(&a[0].data[..6], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(&a[0].data[6..], &[0; 10]);
        assert_eq!(a[1].kind, action::SET_ETH_DST);
        // Fields are emitted in OVS order whatever the input order.
        assert_eq!(format_actions(&a), "set(eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15))");
        let a = pa("set(ipv4(ttl=64,tos=0x5/0xfc,dst=10.0.0.2,src=10.0.0.1))");
        let kinds: Vec<u8> = a.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [action::SET_IPV4_SRC, action::SET_IPV4_DST, action::SET_IPV4_TOS, action::SET_IPV4_TTL]);
        assert_eq!(&a[0].data[..4], &[10, 0, 0, 1]);
        assert_eq!(a[2].arg, 0x04 | 0xfc << 8);
        assert_eq!(a[3].arg, 64 | 0xff << 8);
        assert_eq!(format_actions(&a), "set(ipv4(src=10.0.0.1,dst=10.0.0.2,tos=0x4/0xfc,ttl=64))");
        let a = pa("set(ipv6(dst=::1,hlimit=9,tclass=0x2))");
        assert_eq!(a[0].kind, action::SET_IPV6_DST);
        assert_eq!(a[0].data[15], 1);
        assert_eq!((a[1].kind, a[1].arg), (action::SET_IPV6_TCLASS, 0x2 | 0xff00));
        assert_eq!((a[2].kind, a[2].arg), (action::SET_IPV6_HLIMIT, 9 | 0xff00));
        let a = pa("set(udp(dst=53))");
        assert_eq!((a[0].kind, a[0].arg), (action::SET_TP_DST, IPPROTO_UDP as u32));
        assert_eq!(&a[0].data[..2], &[0, 53]);
        let a = pa("set(sctp(src=258))");
        assert_eq!((a[0].kind, a[0].arg), (action::SET_TP_SRC, IPPROTO_SCTP as u32));
        assert_eq!(&a[0].data[..2], &[1, 2]);
        let a = pa("dec_ttl");
        assert_eq!((a[0].kind, a[0].arg), (action::DEC_TTL, 0));
        assert_eq!(pa("dec_ttl(le_1(drop))"), a);
        assert_eq!(pa("dec_ttl(le_1())"), a);
        assert_eq!(format_actions(&a), "dec_ttl(le_1(drop))");
        // Full masks are accepted on set fields.
        assert_eq!(pa("set(ipv4(src=1.2.3.4/255.255.255.255))"), pa("set(ipv4(src=1.2.3.4))"));
        // Whitespace separators.
        assert_eq!(pa(" 1 ,\t2 "), pa("1,2"));
        // Unknown kinds never panic.
        let junk = Action { kind: 200, arg: 7, ..Default::default() };
        assert_eq!(format_actions(&[junk]), "unknown_action(kind=200,arg=0x7)");
    }

    #[test]
    fn action_errors() {
        let too_many = vec!["1"; MAX_ACTIONS + 1].join(",");
        let e = aerr(&too_many);
        assert!(e.msg.contains("too many actions"), "{e}");
        assert_eq!(pa(&vec!["1"; MAX_ACTIONS].join(",")).len(), MAX_ACTIONS);
        // Expanded sets count individually.
        let near = format!("{},set(ipv4(src=1.1.1.1,dst=2.2.2.2))", vec!["1"; MAX_ACTIONS - 1].join(","));
        assert!(aerr(&near).msg.contains("too many actions"));
        assert_eq!(aerr("foo").msg, "unknown action \"foo\"");
        assert_eq!(aerr("ct(commit)").msg, "unsupported action \"ct\"");
        assert_eq!(aerr("1,drop").msg, "\"drop\" must be the only action");
        assert_eq!(aerr("2x").msg, "output to \"2x\": bad number \"2x\" (expected decimal or 0x-prefixed hex)");
        assert_eq!(aerr("99999999999").msg, "output to \"99999999999\": port number out of range");
        assert_eq!(
            aerr("set(ipv4(src=1.2.3.4/255.255.255.0))").msg,
            "set(ipv4(src=1.2.3.4/255.255.255.0)): masked set of \"src\" is not supported"
        );
        assert_eq!(aerr("set(ipv4(proto=6))").msg, "set(ipv4(proto=6)): field \"proto\" cannot be set");
        assert_eq!(aerr("set(ipv4(src=1.2.3.999))").msg, "set(ipv4(src=1.2.3.999)): bad IPv4 address \"1.2.3.999\"");
        assert_eq!(aerr("set(vlan(vid=5))").msg, "set(vlan(...)): setting \"vlan\" is unsupported");
        assert_eq!(aerr("set(foo(x=1))").msg, "set(...): unknown header \"foo\"");
        assert_eq!(aerr("set(ipv4())").msg, "\"set(ipv4())\": nothing to set");
        assert_eq!(aerr("set(ipv4(src=1.2.3.4)").msg, "expected ')' after \"set(ipv4(src=1.2.3.4)\"");
        assert_eq!(aerr("set(tcp(src=1,src=2))").msg, "set(tcp(src=2)): field \"src\" given twice");
        assert_eq!(aerr("push_vlan(vid=4096)").msg, "push_vlan(vid=4096): value out of range");
        assert_eq!(aerr("push_vlan(pcp=1)").msg, "\"push_vlan(pcp=1)\": missing vid=N");
        assert_eq!(aerr("push_vlan(vid=1/0xff)").msg, "push_vlan(vid=1/0xff): a mask is not allowed here");
        assert_eq!(aerr("push_vlan").msg, "expected '(' after \"push_vlan\", found end of input");
        assert!(aerr("userspace(pid=1,userdata(01))").msg.contains("userdata"));
        assert_eq!(
            aerr("userspace(pid=1,actions=1)").msg,
            "userspace(actions=1): unsupported argument \"actions\" (only pid=N)"
        );
        assert!(aerr("dec_ttl(le_1(2))").msg.contains("dec_ttl(le_1(drop))"));
        assert_eq!(aerr("pop_vlan(").msg, "expected ',' after \"pop_vlan\", found \"(\"");
        assert_eq!(aerr("1;2").msg, "expected ',' after \"1\", found \";2\"");
    }

    /// A small deterministic PRNG for the fuzz-ish tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len())]
        }
    }

    #[test]
    fn garbage_never_panics() {
        let samples = [
            CANONICAL,
            "in_port(1),eth(),eth_type(0x88a8),vlan(vid=100,pcp=3),encap(eth_type(0x8100),vlan(vid=20,pcp=0),encap(eth_type(0x86dd),ipv6(src=::1/::ff,proto=58,frag=no),icmpv6(type=135,code=0),nd(target=::3,sll=00:05:06:07:08:09)))",
            "eth_type(0x0800),ipv4(proto=6,tos=0/0xfc,frag=first),tcp(src=1/0xf),tcp_flags(+syn-ack)",
            "eth_type(0x0806),arp(sip=1.2.3.4/255.0.0.0,op=1/0xf0,sha=00:0f:10:11:12:13/ff:ff:ff:ff:ff:00)",
            "set(ipv4(src=1.2.3.4,tos=0x4/0xfc)),push_vlan(tpid=0x88a8,vid=1,pcp=2,cfi=0),dec_ttl(le_1(drop)),userspace(pid=7),pop_vlan,3",
        ];
        let alphabet: Vec<char> = "(),=/:.x0123456789abcdefl_+-|[] \u{e9}\u{1F600}".chars().collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let base = rng.pick(&samples);
            let mut chars: Vec<char> = base.chars().collect();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 if !chars.is_empty() => {
                        let i = rng.below(chars.len());
                        chars.remove(i);
                    }
                    1 => {
                        let i = rng.below(chars.len() + 1);
                        chars.insert(i, rng.pick(&alphabet));
                    }
                    2 if !chars.is_empty() => {
                        let i = rng.below(chars.len());
                        chars[i] = rng.pick(&alphabet);
                    }
                    _ => {
                        let n = rng.below(chars.len() + 1);
                        chars.truncate(n);
                    }
                }
            }
            let s: String = if round % 10 == 0 {
                (0..rng.below(30)).map(|_| rng.pick(&alphabet)).collect()
            } else {
                chars.into_iter().collect()
            };
            for r in [parse_flow(&s).map(|m| format_flow(&m)), parse_actions(&s).map(|a| format_actions(&a))] {
                match r {
                    Ok(out) => assert!(!out.is_empty()),
                    Err(e) => {
                        assert!(e.pos <= s.len(), "{s:?}: {e:?}");
                        assert!(!e.msg.contains('\n') || s.contains('\n'));
                    }
                }
            }
            // Whatever parses once must read back the same after formatting.
            if let Ok(m) = parse_flow(&s) {
                assert_eq!(parse_flow(&format_flow(&m)), Ok(m), "{s:?}");
            }
            if let Ok(a) = parse_actions(&s) {
                assert_eq!(parse_actions(&format_actions(&a)), Ok(a), "{s:?}");
            }
        }
    }

    /// Random keys and masks: whatever format_flow prints must parse, and
    /// format the same again.
    #[test]
    fn random_matches_format_consistently() {
        let mut rng = Rng(12345);
        for _ in 0..20_000 {
            let mut k = FlowKey::zeroed();
            let mut m = FlowKey::zeroed();
            for w in k.words_mut().iter_mut() {
                *w = rng.next();
            }
            for w in m.words_mut().iter_mut() {
                *w = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.next(),
                };
            }
            // Make the interesting structure likely.
            k.eth_type = rng
                .pick(&[ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_ARP, ETH_TYPE_RARP, 0x8100, ETH_TYPE_NONE, 0, 0x1234])
                .to_be();
            m.eth_type = rng.pick(&[0u16, 0xffff, 0xffff, 0xffff, 0xff00]).to_be();
            k.nw_proto = rng.pick(&[6, 17, 132, 1, 58, 0]);
            m.nw_proto = rng.pick(&[0, 0xff, 0xff, 0xf0]);
            for i in 0..2 {
                k.vlan_tci[i] = (rng.next() as u16 | rng.pick(&[0, VLAN_CFI, VLAN_CFI])).to_be();
                k.vlan_tpid[i] = rng.pick(&[0u16, 0x8100, 0x88a8]).to_be();
                let r = rng.next() as u16;
                m.vlan_tci[i] = rng.pick(&[0u16, 0xffff, 0x1fff, VLAN_CFI, r]).to_be();
                m.vlan_tpid[i] = rng.pick(&[0u16, 0xffff, 0xffff]).to_be();
            }
            let fm = FlowMatch { key: k, mask: m };
            let s1 = format_flow(&fm);
            let m2 = parse_flow(&s1).unwrap_or_else(|e| panic!("{s1}: {e}"));
            assert_eq!(format_flow(&m2), s1);
            assert_eq!(parse_flow(&format_flow(&m2)), Ok(m2));
        }
    }

    #[test]
    fn random_actions_format_consistently() {
        let mut rng = Rng(777);
        let kinds = [
            action::OUTPUT,
            action::USERSPACE,
            action::PUSH_VLAN,
            action::POP_VLAN,
            action::SET_ETH_SRC,
            action::SET_ETH_DST,
            action::SET_IPV4_SRC,
            action::SET_IPV4_DST,
            action::SET_IPV4_TOS,
            action::SET_IPV4_TTL,
            action::SET_IPV6_SRC,
            action::SET_IPV6_DST,
            action::SET_IPV6_TCLASS,
            action::SET_IPV6_HLIMIT,
            action::SET_TP_SRC,
            action::SET_TP_DST,
            action::DEC_TTL,
        ];
        for _ in 0..20_000 {
            let n = rng.below(MAX_ACTIONS + 1);
            let mut v = Vec::new();
            for _ in 0..n {
                let kind = rng.pick(&kinds);
                let mut a = Action { kind, ..Default::default() };
                match kind {
                    action::OUTPUT | action::USERSPACE => a.arg = rng.next() as u32,
                    action::PUSH_VLAN => {
                        let tpid = rng.pick(&[0x8100u32, 0x88a8, 0x9100]);
                        a.arg = tpid << 16 | (rng.next() as u32 & 0xffff);
                    }
                    action::SET_IPV4_TOS | action::SET_IPV4_TTL | action::SET_IPV6_TCLASS | action::SET_IPV6_HLIMIT => {
                        let (val, mask) = (rng.next() as u32 & 0xff, rng.pick(&[0xffu32, 0xfc, 0x3, 0]));
                        a.arg = (val & mask) | mask << 8;
                    }
                    action::SET_TP_SRC | action::SET_TP_DST => {
                        a.arg = rng.pick(&[6u32, 17, 132]);
                        a.data[..2].copy_from_slice(&(rng.next() as u16).to_be_bytes());
                    }
                    action::SET_ETH_SRC | action::SET_ETH_DST => {
                        for b in &mut a.data[..6] {
                            *b = rng.next() as u8;
                        }
                    }
                    action::SET_IPV4_SRC | action::SET_IPV4_DST => {
                        for b in &mut a.data[..4] {
                            *b = rng.next() as u8;
                        }
                    }
                    action::SET_IPV6_SRC | action::SET_IPV6_DST => {
                        for b in &mut a.data {
                            *b = if rng.below(3) == 0 { 0 } else { rng.next() as u8 };
                        }
                    }
                    _ => {}
                }
                v.push(a);
            }
            let s = format_actions(&v);
            let back = parse_actions(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(back, v, "{s}");
        }
    }
}

/// The mask that shows everything a packet's key holds (an exact match on
/// it): every bit, less the L4 fields of a later fragment, which has none.
pub fn packet_mask(key: &FlowKey) -> FlowKey {
    let mut m = FlowKey::zeroed();
    for w in m.words_mut().iter_mut() {
        *w = u64::MAX;
    }
    m._pad = 0;
    if key.nw_frag & oxvs_dp_abi::FRAG_LATER != 0 {
        m.tp_src = 0;
        m.tp_dst = 0;
        m.tcp_flags = 0;
    }
    m
}
