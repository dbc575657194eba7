//! OVSDB data in the string syntax of Open vSwitch's command-line tools
//! (ovs-vsctl, ovn-nbctl): `br0`, `"a b"`, `1-5`, `[a, b]`, `{k=v, k2=v2}`.
//!
//! Parsing follows `ovsdb_atom_from_string` / `ovsdb_datum_from_string` and
//! printing `ovsdb_atom_to_string` / `ovsdb_datum_to_string` /
//! `ovsdb_datum_to_bare` in OVS's lib/ovsdb-data.c. Error messages use OVS's
//! own wording because ovs-vsctl prints them verbatim (after "ovs-vsctl: ")
//! and scripts compare them.
use std::sync::Arc;

use uuid::Uuid;

use crate::{
    atom::{Atom, AtomicType, parse_uuid},
    datum::Datum,
    types::{BaseType, Type, UNLIMITED},
};

/// Resolves "@name" symbols to uuids (ovs-vsctl's `--id=@name`); an `Err`
/// is reported to the user as is.
pub type SymbolResolver<'a> = dyn FnMut(&str) -> Result<Uuid, String> + 'a;

/// OVS refuses integer ranges (`1-5000`) spanning this many values or more.
const MAX_ATOM_RANGE_SIZE: u64 = 4096;

/// `DBL_DIG`: reals are printed with this many significant digits.
const REAL_DIGITS: usize = 15;

/// Parses one atom of type `base` and checks `base`'s constraints.
pub fn atom_from_string(base: &BaseType, s: &str, symbols: Option<&mut SymbolResolver>) -> Result<Atom, String> {
    let (atom, _) = atom_from_string_range(base, s, false, symbols)?;
    Ok(atom)
}

/// Like [`atom_from_string`], but an integer may also be an inclusive range
/// `A-B` (sets of integers accept them), returned as its end.
fn atom_from_string_range(
    base: &BaseType,
    s: &str,
    allow_range: bool,
    symbols: Option<&mut SymbolResolver>,
) -> Result<(Atom, Option<i64>), String> {
    let (atom, range_end) = parse_atom(base, s, allow_range, symbols)?;
    check_constraints(base, &atom)?;
    if let (Atom::Integer(start), Some(end)) = (&atom, range_end) {
        if base.enum_.is_some() {
            // Every value of the range must be allowed, not only its ends.
            for i in start.saturating_add(1)..=end {
                check_constraints(base, &Atom::Integer(i))?;
            }
        } else {
            check_constraints(base, &Atom::Integer(end))?;
        }
        if (end as u64).wrapping_sub(*start as u64) >= MAX_ATOM_RANGE_SIZE {
            return Err(format!(
                "constraint violation: Range \"{start}-{end}\" is too big. Maximum allowed size is {MAX_ATOM_RANGE_SIZE}."
            ));
        }
    }
    Ok((atom, range_end))
}

fn parse_atom(
    base: &BaseType,
    s: &str,
    allow_range: bool,
    symbols: Option<&mut SymbolResolver>,
) -> Result<(Atom, Option<i64>), String> {
    Ok(match base.atype {
        AtomicType::Integer => {
            if allow_range && let Some((start, end)) = str_to_llong_range(s) {
                if end < start {
                    return Err(format!("\"{s}\" is not a valid range. Range end cannot be before start."));
                }
                return Ok((Atom::Integer(start), Some(end)));
            }
            match str_to_llong(s) {
                Some(i) => (Atom::Integer(i), None),
                None => return Err(format!("\"{s}\" is not a valid integer or range")),
            }
        }
        AtomicType::Real => match str_to_double(s) {
            // OVS's JSON reader turns -0 into 0; the string reader matches it.
            Some(r) => (Atom::Real(if r == 0.0 { 0.0 } else { r }), None),
            None => return Err(format!("\"{s}\" is not a valid real number")),
        },
        AtomicType::Boolean => match s {
            "true" | "yes" | "on" | "1" => (Atom::Boolean(true), None),
            "false" | "no" | "off" | "0" => (Atom::Boolean(false), None),
            _ => return Err(format!("\"{s}\" is not a valid boolean (use \"true\" or \"false\")")),
        },
        AtomicType::String => {
            if s.is_empty() {
                return Err("An empty string is not valid as input; use \"\" to represent the empty string".into());
            }
            if let Some(body) = s.strip_prefix('"') {
                let Some(body) = body.strip_suffix('"') else {
                    return Err(format!("{s}: missing quote at end of quoted string"));
                };
                match json_string_unescape(body) {
                    Ok(text) => (Atom::String(Arc::from(text)), None),
                    Err(e) => return Err(format!("{s}: {e}")),
                }
            } else {
                (Atom::string(s), None)
            }
        }
        AtomicType::Uuid => {
            if s.starts_with('@')
                && let Some(resolve) = symbols
            {
                (Atom::Uuid(resolve(s)?), None)
            } else {
                match parse_uuid(s) {
                    Some(u) => (Atom::Uuid(u), None),
                    None => return Err(format!("\"{s}\" is not a valid UUID")),
                }
            }
        }
    })
}

/// C's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtoll(s, &tail, 10)`: the value and where the number ends, or None
/// when there is no number or it overflows.
fn strtoll_prefix(s: &str) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let negative = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = i;
    // Accumulate negatively so that i64::MIN parses.
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_sub(i64::from(b[i] - b'0'))?;
        i += 1;
    }
    if i == digits {
        return None;
    }
    let v = if negative { v } else { v.checked_neg()? };
    Some((v, i))
}

fn str_to_llong(s: &str) -> Option<i64> {
    strtoll_prefix(s).filter(|(_, end)| *end == s.len()).map(|(v, _)| v)
}

/// "A-B" with A and B decimal integers (each may have a sign).
fn str_to_llong_range(s: &str) -> Option<(i64, i64)> {
    let (start, tail) = strtoll_prefix(s)?;
    let rest = s[tail..].strip_prefix('-')?;
    Some((start, str_to_llong(rest)?))
}

/// `strtod` for the forms people write (decimal, exponent). Non-finite
/// values are refused: OVSDB's JSON cannot carry them.
fn str_to_double(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')) {
        return None;
    }
    t.parse::<f64>().ok().filter(|r| r.is_finite())
}

/// Decodes the inside of a JSON string literal (OVS's `json_string_unescape`).
fn json_string_unescape(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("quoted string may not include unescaped \"".into()),
            '\\' => {}
            c => {
                out.push(c);
                continue;
            }
        }
        let Some(e) = chars.next() else {
            return Err("quoted string may not end with backslash".into());
        };
        match e {
            '"' | '\\' | '/' => out.push(e),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let c0 = hex4(&mut chars)?;
                if !(0xd800..0xdc00).contains(&c0) {
                    out.push(char::from_u32(c0).ok_or("not a valid UTF-8 string: invalid UTF-16 surrogate")?);
                    continue;
                }
                if chars.next() != Some('\\') || chars.next() != Some('u') {
                    return Err("malformed escaped surrogate pair".into());
                }
                let c1 = hex4(&mut chars)?;
                if !(0xdc00..0xe000).contains(&c1) {
                    return Err("second half of escaped surrogate pair is not trailing surrogate".into());
                }
                let code = 0x10000 + ((c0 - 0xd800) << 10) + (c1 - 0xdc00);
                out.push(char::from_u32(code).ok_or("malformed escaped surrogate pair")?);
            }
            other => return Err(format!("bad escape \\{other}")),
        }
    }
    Ok(out)
}

fn hex4(chars: &mut std::str::Chars) -> Result<u32, String> {
    let digits: String = chars.by_ref().take(4).collect();
    if digits.chars().count() < 4 {
        return Err("quoted string ends within \\u escape".into());
    }
    let v = u32::from_str_radix(&digits, 16)
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("malformed \\u escape")?;
    if v == 0 {
        return Err("null bytes not supported in quoted strings".into());
    }
    Ok(v)
}

/// OVS's `ovsdb_atom_check_constraints` (uuid references are checked at
/// commit, not here), with its messages.
fn check_constraints(base: &BaseType, atom: &Atom) -> Result<(), String> {
    if let Some(allowed) = &base.enum_
        && allowed.binary_search(atom).is_err()
    {
        let set = Datum { keys: allowed.clone(), values: None };
        let set_type = Type { key: BaseType::new(base.atype), value: None, min: 0, max: UNLIMITED };
        return Err(format!(
            "constraint violation: {} is not one of the allowed values ({})",
            atom_to_string(atom),
            datum_to_string(&set, &set_type)
        ));
    }
    match atom {
        Atom::Integer(i) => {
            let (min, max) = (base.min_integer.unwrap_or(i64::MIN), base.max_integer.unwrap_or(i64::MAX));
            if (min..=max).contains(i) {
                Ok(())
            } else if min != i64::MIN && max != i64::MAX {
                Err(format!("constraint violation: {i} is not in the valid range {min} to {max} (inclusive)"))
            } else if min != i64::MIN {
                Err(format!("constraint violation: {i} is less than minimum allowed value {min}"))
            } else {
                Err(format!("constraint violation: {i} is greater than maximum allowed value {max}"))
            }
        }
        Atom::Real(r) => {
            let (min, max) = (base.min_real.unwrap_or(-f64::MAX), base.max_real.unwrap_or(f64::MAX));
            let (rs, mins, maxs) = (real_to_string(*r), real_to_string(min), real_to_string(max));
            if *r >= min && *r <= max {
                Ok(())
            } else if min != -f64::MAX && max != f64::MAX {
                Err(format!("constraint violation: {rs} is not in the valid range {mins} to {maxs} (inclusive)"))
            } else if min != -f64::MAX {
                Err(format!("constraint violation: {rs} is less than minimum allowed value {mins}"))
            } else {
                Err(format!("constraint violation: {rs} is greater than maximum allowed value {maxs}"))
            }
        }
        Atom::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(min) = base.min_length.filter(|m| n < *m) {
                Err(format!("constraint violation: \"{s}\" length {n} is less than minimum allowed length {min}"))
            } else if let Some(max) = base.max_length.filter(|m| n > *m) {
                Err(format!("constraint violation: \"{s}\" length {n} is greater than maximum allowed length {max}"))
            } else {
                Ok(())
            }
        }
        Atom::Boolean(_) | Atom::Uuid(_) => Ok(()),
    }
}

/// Characters that end an unquoted token.
fn is_delim(b: u8) -> bool {
    b":=, []{}!<>".contains(&b)
}

fn skip_spaces(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    i
}

/// Takes one token from `s[start..]` (OVS's `ovsdb_token_parse`): it ends at
/// a delimiter outside double quotes; a backslash escapes the next byte (and
/// is kept inside quotes, where the JSON unescaping sees it). Returns the
/// token and where it ended.
pub fn token_parse(s: &str, start: usize) -> Result<(String, usize), String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut i = start;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c == b'\\' {
            if in_quotes {
                out.push(b'\\');
            }
            let Some(&next) = b.get(i) else {
                return Err(format!("{}: backslash at end of argument", &s[start..]));
            };
            out.push(next);
            i += 1;
        } else if !in_quotes && is_delim(c) {
            i -= 1;
            break;
        } else {
            out.push(c);
            if c == b'"' {
                in_quotes = !in_quotes;
            }
        }
    }
    if in_quotes {
        return Err(format!("{}: quoted string extends past end of argument", &s[start..]));
    }
    // Only ASCII backslashes were dropped, so the bytes are still UTF-8
    // unless a backslash split a multibyte character (then the lossy form
    // still reads as an error later rather than a panic).
    Ok((String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()), i))
}

/// OVS's `ovsdb_type_to_english`: "string", "set of up to 4096 integers",
/// "map of (string, string) pairs".
pub fn type_to_english(ty: &Type) -> String {
    let key = ty.key.atype.name();
    if ty.is_scalar() {
        return key.to_string();
    }
    let mut s = String::from(if ty.is_map() { "map" } else { "set" });
    if ty.max == UNLIMITED {
        if ty.min > 0 {
            s += &format!(" of {} or more", ty.min);
        } else {
            s += " of";
        }
    } else if ty.min > 0 {
        s += &format!(" of {} to {}", ty.min, ty.max);
    } else {
        s += &format!(" of up to {}", ty.max);
    }
    match &ty.value {
        None => s += &format!(" {key}s"),
        Some(v) => s += &format!(" ({key}, {}) pairs", v.atype.name()),
    }
    s
}

/// Parses a whole value of type `ty`: atoms (or `key=value` pairs) separated
/// by commas or spaces, optionally inside `[...]` (sets) or `{...}` (maps),
/// which an empty value needs. Integer keys may be ranges `A-B`. Checks the
/// constraints and the element count; the result is sorted.
pub fn datum_from_string(ty: &Type, s: &str, mut symbols: Option<&mut SymbolResolver>) -> Result<Datum, String> {
    let is_map = ty.is_map();
    let bytes = s.as_bytes();
    let (open, close) = if is_map { (b'{', b'}') } else { (b'[', b']') };
    let mut p = skip_spaces(s, 0);
    let end_delim = if bytes.get(p) == Some(&open) {
        p = skip_spaces(s, p + 1);
        Some(close)
    } else if p == bytes.len() {
        return Err(if is_map {
            "use \"{}\" to specify the empty map".into()
        } else {
            "use \"[]\" to specify the empty set".into()
        });
    } else {
        None
    };

    let mut pairs: Vec<(Atom, Option<Atom>)> = Vec::new();
    while p < bytes.len() && Some(bytes[p]) != end_delim {
        if is_delim(bytes[p]) {
            return Err(format!("{s}: unexpected \"{}\" parsing {}", char_at(s, p), type_to_english(ty)));
        }
        let start = p;
        let (token, next) = token_parse(s, p)?;
        p = next;
        let (key, range_end) = atom_from_string_range(&ty.key, &token, true, symbols.as_deref_mut())?;
        let value = match &ty.value {
            None => None,
            Some(vt) => {
                p = skip_spaces(s, p);
                if bytes.get(p) != Some(&b'=') {
                    // OVS formats the byte with %c: at the end of the input
                    // that is a NUL, which ends its message right there.
                    return Err(match bytes.get(p) {
                        Some(_) => format!("{}: syntax error at \"{}\" expecting \"=\"", &s[start..], char_at(s, p)),
                        None => format!("{}: syntax error at \"", &s[start..]),
                    });
                }
                p = skip_spaces(s, p + 1);
                let (token, next) = token_parse(s, p)?;
                p = next;
                Some(atom_from_string(vt, &token, symbols.as_deref_mut())?)
            }
        };
        match (&key, range_end) {
            (Atom::Integer(a), Some(z)) => pairs.extend((*a..=z).map(|i| (Atom::Integer(i), value.clone()))),
            _ => pairs.push((key, value)),
        }
        p = skip_spaces(s, p);
        if bytes.get(p) == Some(&b',') {
            p = skip_spaces(s, p + 1);
        }
    }

    if let Some(close) = end_delim {
        if bytes.get(p) != Some(&close) {
            return Err(format!("{s}: missing \"{}\" at end of data", close as char));
        }
        if skip_spaces(s, p + 1) != bytes.len() {
            return Err(format!("{s}: trailing garbage after \"{}\"", close as char));
        }
    }

    let n = pairs.len() as u64;
    let what = if is_map { "pair(s)" } else { "value(s)" };
    if n < ty.min {
        return Err(format!("{s}: {n} {what} specified but the minimum number is {}", ty.min));
    }
    if n > ty.max {
        return Err(format!("{s}: {n} {what} specified but the maximum number is {}", ty.max));
    }

    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(if is_map {
            format!("{s}: map contains duplicate key")
        } else {
            format!("{s}: set contains duplicate value")
        });
    }
    let (keys, values): (Vec<Atom>, Vec<Option<Atom>>) = pairs.into_iter().unzip();
    let values = if is_map { Some(values.into_iter().flatten().collect()) } else { None };
    Ok(Datum { keys, values })
}

/// The character starting at byte `i` (a whole UTF-8 character, where C
/// would print only its first byte).
fn char_at(s: &str, i: usize) -> char {
    s.get(i..).and_then(|t| t.chars().next()).unwrap_or('?')
}

/// OVS's `string_needs_quotes`: anything but an identifier-like word
/// (letter or '_' first, then letters, digits, '_', '-', '.') is quoted, and
/// so are the words that would read back as something else.
fn string_needs_quotes(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return true,
    }
    if !b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')) {
        return true;
    }
    s == "true" || s == "false" || parse_uuid(s).is_some()
}

/// A JSON string literal exactly as OVS writes it: `"` and `\` escaped,
/// control characters as `\b \t \n \f \r` or `\u00XX`, everything else
/// (including non-ASCII) as is.
pub fn json_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A real as C's `printf("%.15g")` writes it (OVS's `DBL_DIG` format).
pub fn real_to_string(r: f64) -> String {
    format_g(r, REAL_DIGITS)
}

/// C's `%.{precision}g`.
pub fn format_g(r: f64, precision: usize) -> String {
    if r.is_nan() {
        return if r.is_sign_negative() { "-nan".into() } else { "nan".into() };
    }
    if r.is_infinite() {
        return if r < 0.0 { "-inf".into() } else { "inf".into() };
    }
    let p = precision.max(1);
    // Round to p significant digits first: the exponent after rounding
    // decides between fixed and exponential notation.
    let sci = format!("{:.*e}", p - 1, r);
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if exp < -4 || exp >= p as i32 {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip_fraction_zeros(&format!("{:.*}", decimals, r)).to_string()
    }
}

fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

/// One atom in the syntax [`atom_from_string`] reads back.
pub fn atom_to_string(atom: &Atom) -> String {
    match atom {
        Atom::Integer(i) => i.to_string(),
        Atom::Real(r) => real_to_string(*r),
        Atom::Boolean(b) => b.to_string(),
        Atom::String(s) if string_needs_quotes(s) => json_quote(s),
        Atom::String(s) => s.to_string(),
        Atom::Uuid(u) => u.to_string(),
    }
}

/// An atom for shell scripts: strings never quoted.
fn atom_to_bare(atom: &Atom) -> String {
    match atom {
        Atom::String(s) => s.to_string(),
        other => atom_to_string(other),
    }
}

/// A value in the syntax [`datum_from_string`] reads back: a column that may
/// hold more than one element (and any empty value) gets `[...]` or `{...}`.
pub fn datum_to_string(datum: &Datum, ty: &Type) -> String {
    let bracket = ty.max > 1 || datum.is_empty();
    let (open, close) = if ty.is_map() { ('{', '}') } else { ('[', ']') };
    let mut out = String::new();
    if bracket {
        out.push(open);
    }
    for (i, key) in datum.keys.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&atom_to_string(key));
        if ty.is_map()
            && let Some(v) = datum.values.as_ref().and_then(|v| v.get(i))
        {
            out.push('=');
            out.push_str(&atom_to_string(v));
        }
    }
    if bracket {
        out.push(close);
    }
    out
}

/// A value for shell scripts (OVS's `ovsdb_datum_to_bare`): elements
/// separated by spaces, `key=value` for maps, no brackets or quotes.
pub fn datum_to_bare(datum: &Datum, ty: &Type) -> String {
    let mut out = String::new();
    for (i, key) in datum.keys.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&atom_to_bare(key));
        if ty.is_map()
            && let Some(v) = datum.values.as_ref().and_then(|v| v.get(i))
        {
            out.push('=');
            out.push_str(&atom_to_bare(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn ty(v: Value) -> Type {
        Type::from_json(&v).unwrap()
    }

    fn base(v: Value) -> BaseType {
        BaseType::from_json(&v).unwrap()
    }

    fn parse(t: &Type, s: &str) -> Result<String, String> {
        datum_from_string(t, s, None).map(|d| datum_to_string(&d, t))
    }

    #[test]
    fn reals_print_like_printf_15g() {
        // Expected texts from C's printf("%.15g").
        for (r, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.333333333333333"),
            (1e15, "1e+15"),
            (1e16, "1e+16"),
            (123456789012345678.0, "1.23456789012346e+17"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e300, "1e+300"),
            (-1e-300, "-1e-300"),
            (100.0, "100"),
            (0.30000000000000004, "0.3"),
            (999999999999999.9, "1e+15"),
        ] {
            assert_eq!(real_to_string(r), want, "{r:?}");
        }
        assert_eq!(format_g(0.30000000000000004, 17), "0.30000000000000004");
    }

    #[test]
    fn strings_are_quoted_when_they_would_not_read_back() {
        for (s, want) in [
            ("br0", "br0"),
            ("_x-1.2", "_x-1.2"),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("123", "\"123\""),
            ("true", "\"true\""),
            ("false", "\"false\""),
            ("yes", "yes"),
            ("-x", "\"-x\""),
            ("a,b", "\"a,b\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"\\", "\"say \\\"hi\\\"\\\\\""),
            ("tab\there\n\u{1}\u{7f}", "\"tab\\there\\n\\u0001\u{7f}\""),
            ("héllo", "\"héllo\""),
            ("abcdef01-2345-6789-abcd-ef0123456789", "\"abcdef01-2345-6789-abcd-ef0123456789\""),
            ("abcdef01-2345-6789-abcd-ef012345678", "abcdef01-2345-6789-abcd-ef012345678"),
        ] {
            assert_eq!(atom_to_string(&Atom::string(s)), want, "{s:?}");
            // And it reads back as the same string.
            let back = atom_from_string(&BaseType::new(AtomicType::String), &atom_to_string(&Atom::string(s)), None);
            assert_eq!(back, Ok(Atom::string(s)));
        }
    }

    #[test]
    fn atoms_of_each_type() {
        let int = BaseType::new(AtomicType::Integer);
        assert_eq!(atom_from_string(&int, "-42", None), Ok(Atom::Integer(-42)));
        assert_eq!(atom_from_string(&int, "+7", None), Ok(Atom::Integer(7)));
        assert_eq!(atom_from_string(&int, "-9223372036854775808", None), Ok(Atom::Integer(i64::MIN)));
        for bad in ["x", "", "1.5", "9223372036854775808", "1-2", "0x10", "5 "] {
            assert_eq!(atom_from_string(&int, bad, None), Err(format!("\"{bad}\" is not a valid integer or range")));
        }
        let real = BaseType::new(AtomicType::Real);
        assert_eq!(atom_from_string(&real, "1.5e3", None), Ok(Atom::Real(1500.0)));
        assert_eq!(atom_from_string(&real, "-0", None).map(|a| atom_to_string(&a)), Ok("0".into()));
        for bad in ["x", "1e999", "nan", "1.5x"] {
            assert_eq!(atom_from_string(&real, bad, None), Err(format!("\"{bad}\" is not a valid real number")));
        }
        let boolean = BaseType::new(AtomicType::Boolean);
        for (s, b) in [("true", true), ("yes", true), ("on", true), ("1", true), ("false", false), ("no", false)] {
            assert_eq!(atom_from_string(&boolean, s, None), Ok(Atom::Boolean(b)));
        }
        assert_eq!(
            atom_from_string(&boolean, "maybe", None),
            Err("\"maybe\" is not a valid boolean (use \"true\" or \"false\")".into())
        );
        let string = BaseType::new(AtomicType::String);
        assert_eq!(
            atom_from_string(&string, "", None),
            Err("An empty string is not valid as input; use \"\" to represent the empty string".into())
        );
        assert_eq!(atom_from_string(&string, "\"a\\u00e9\\ud83d\\ude00\"", None), Ok(Atom::string("aé😀")));
        assert_eq!(atom_from_string(&string, "\"ab", None), Err("\"ab: missing quote at end of quoted string".into()));
        assert_eq!(atom_from_string(&string, "\"", None), Err("\": missing quote at end of quoted string".into()));
        assert_eq!(atom_from_string(&string, "\"a\\q\"", None), Err("\"a\\q\": bad escape \\q".into()));
        assert_eq!(
            atom_from_string(&string, "\"a\"b\"", None),
            Err("\"a\"b\": quoted string may not include unescaped \"".into())
        );
        assert_eq!(
            atom_from_string(&string, "\"\\u12\"", None),
            Err("\"\\u12\": quoted string ends within \\u escape".into())
        );
        let uuid = BaseType::new(AtomicType::Uuid);
        let u = Uuid::new_v4();
        assert_eq!(atom_from_string(&uuid, &u.to_string().to_uppercase(), None), Ok(Atom::Uuid(u)));
        assert_eq!(atom_to_string(&Atom::Uuid(u)), u.to_string());
        assert_eq!(atom_from_string(&uuid, "abc", None), Err("\"abc\" is not a valid UUID".into()));
        assert_eq!(atom_from_string(&uuid, "@br", None), Err("\"@br\" is not a valid UUID".into()));
    }

    #[test]
    fn symbols_resolve_through_the_callback() {
        let uuid = BaseType::new(AtomicType::Uuid);
        let u = Uuid::new_v4();
        let mut seen = Vec::new();
        let mut resolve = |name: &str| {
            seen.push(name.to_string());
            if name == "@br" { Ok(u) } else { Err(format!("no row \"{name}\"")) }
        };
        assert_eq!(atom_from_string(&uuid, "@br", Some(&mut resolve)), Ok(Atom::Uuid(u)));
        assert_eq!(atom_from_string(&uuid, "@nope", Some(&mut resolve)), Err("no row \"@nope\"".into()));
        let set = ty(json!({"key": "uuid", "min": 0, "max": "unlimited"}));
        let d = datum_from_string(&set, "[@br]", Some(&mut resolve)).unwrap();
        assert_eq!(d.keys, vec![Atom::Uuid(u)]);
        assert_eq!(seen, ["@br", "@nope", "@br"]);
    }

    #[test]
    fn constraint_errors_use_ovs_wording() {
        let fail_mode = base(json!({"type": "string", "enum": ["set", ["standalone", "secure"]]}));
        assert_eq!(
            atom_from_string(&fail_mode, "foo", None),
            Err("constraint violation: foo is not one of the allowed values ([secure, standalone])".into())
        );
        let one = base(json!({"type": "string", "enum": "only"}));
        assert_eq!(
            atom_from_string(&one, "a b", None),
            Err("constraint violation: \"a b\" is not one of the allowed values ([only])".into())
        );
        let vlan = base(json!({"type": "integer", "minInteger": 0, "maxInteger": 4095}));
        assert_eq!(
            atom_from_string(&vlan, "5000", None),
            Err("constraint violation: 5000 is not in the valid range 0 to 4095 (inclusive)".into())
        );
        let min = base(json!({"type": "integer", "minInteger": 1000}));
        assert_eq!(
            atom_from_string(&min, "5", None),
            Err("constraint violation: 5 is less than minimum allowed value 1000".into())
        );
        let max = base(json!({"type": "integer", "maxInteger": 10}));
        assert_eq!(
            atom_from_string(&max, "11", None),
            Err("constraint violation: 11 is greater than maximum allowed value 10".into())
        );
        let r = base(json!({"type": "real", "minReal": 0.5, "maxReal": 1}));
        assert_eq!(
            atom_from_string(&r, "1.25", None),
            Err("constraint violation: 1.25 is not in the valid range 0.5 to 1 (inclusive)".into())
        );
        let rmin = base(json!({"type": "real", "minReal": 0.1}));
        assert_eq!(
            atom_from_string(&rmin, "0", None),
            Err("constraint violation: 0 is less than minimum allowed value 0.1".into())
        );
        let len = base(json!({"type": "string", "minLength": 2, "maxLength": 3}));
        assert_eq!(
            atom_from_string(&len, "é", None),
            Err("constraint violation: \"é\" length 1 is less than minimum allowed length 2".into())
        );
        assert_eq!(
            atom_from_string(&len, "abcd", None),
            Err("constraint violation: \"abcd\" length 4 is greater than maximum allowed length 3".into())
        );
    }

    #[test]
    fn sets_and_ranges() {
        let trunks =
            ty(json!({"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 4096}));
        assert_eq!(parse(&trunks, "1-3,7"), Ok("[1, 2, 3, 7]".into()));
        assert_eq!(parse(&trunks, " [ 9 8, 7 ] "), Ok("[7, 8, 9]".into()));
        assert_eq!(parse(&trunks, "[]"), Ok("[]".into()));
        assert_eq!(parse(&trunks, "4-4"), Ok("[4]".into()));
        assert_eq!(parse(&trunks, ""), Err("use \"[]\" to specify the empty set".into()));
        assert_eq!(
            parse(&trunks, "5-1"),
            Err("\"5-1\" is not a valid range. Range end cannot be before start.".into())
        );
        assert_eq!(
            parse(&trunks, "1-5000"),
            Err("constraint violation: 5000 is not in the valid range 0 to 4095 (inclusive)".into())
        );
        assert_eq!(parse(&trunks, "[1,1]"), Err("[1,1]: set contains duplicate value".into()));
        assert_eq!(parse(&trunks, "1-2,2"), Err("1-2,2: set contains duplicate value".into()));
        assert_eq!(parse(&trunks, "[1"), Err("[1: missing \"]\" at end of data".into()));
        assert_eq!(parse(&trunks, "[1] x"), Err("[1] x: trailing garbage after \"]\"".into()));
        assert_eq!(parse(&trunks, "1=2"), Err("1=2: unexpected \"=\" parsing set of up to 4096 integers".into()));
        let big = ty(json!({"key": "integer", "min": 0, "max": "unlimited"}));
        assert_eq!(
            parse(&big, "0-4096"),
            Err("constraint violation: Range \"0-4096\" is too big. Maximum allowed size is 4096.".into())
        );
        assert_eq!(parse(&big, "0-4095").map(|s| s.len() > 10), Ok(true));
        let enum_int =
            ty(json!({"key": {"type": "integer", "enum": ["set", [1, 2, 4]]}, "min": 0, "max": "unlimited"}));
        assert_eq!(
            parse(&enum_int, "1-4"),
            Err("constraint violation: 3 is not one of the allowed values ([1, 2, 4])".into())
        );
        let tag = ty(json!({"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 1}));
        assert_eq!(parse(&tag, "5"), Ok("5".into()));
        assert_eq!(parse(&tag, "[]"), Ok("[]".into()));
        assert_eq!(parse(&tag, "[1,2]"), Err("[1,2]: 2 value(s) specified but the maximum number is 1".into()));
        let one_or_more = ty(json!({"key": "string", "min": 1, "max": "unlimited"}));
        assert_eq!(parse(&one_or_more, "[]"), Err("[]: 0 value(s) specified but the minimum number is 1".into()));
        assert_eq!(parse(&one_or_more, "b a"), Ok("[a, b]".into()), "spaces separate elements as commas do");
        assert_eq!(parse(&one_or_more, "[a]b"), Err("[a]b: trailing garbage after \"]\"".into()));
        let name = ty(json!("string"));
        assert_eq!(parse(&name, "\"a b\""), Ok("\"a b\"".into()));
        assert_eq!(parse(&name, "a\\ b"), Ok("\"a b\"".into()));
        assert_eq!(parse(&name, "a b"), Err("a b: 2 value(s) specified but the maximum number is 1".into()));
        assert_eq!(parse(&name, "a\\"), Err("a\\: backslash at end of argument".into()));
        assert_eq!(parse(&name, "\"a"), Err("\"a: quoted string extends past end of argument".into()));
    }

    #[test]
    fn maps() {
        let ids = ty(json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}));
        assert_eq!(parse(&ids, "{b=2, a=\"x y\"}"), Ok("{a=\"x y\", b=\"2\"}".into()));
        assert_eq!(parse(&ids, "k = v"), Ok("{k=v}".into()));
        assert_eq!(parse(&ids, "{}"), Ok("{}".into()));
        assert_eq!(parse(&ids, ""), Err("use \"{}\" to specify the empty map".into()));
        assert_eq!(parse(&ids, "{a=b, a=c}"), Err("{a=b, a=c}: map contains duplicate key".into()));
        assert_eq!(parse(&ids, "a"), Err("a: syntax error at \"".into()));
        assert_eq!(parse(&ids, "{a b}"), Err("a b}: syntax error at \"b\" expecting \"=\"".into()));
        assert_eq!(parse(&ids, "{=b}"), Err("{=b}: unexpected \"=\" parsing map of (string, string) pairs".into()));
        assert_eq!(parse(&ids, "[a=b]"), Err("[a=b]: unexpected \"[\" parsing map of (string, string) pairs".into()));
        let counts = ty(json!({"key": "string", "value": "integer", "min": 0, "max": "unlimited"}));
        let d = datum_from_string(&counts, "{rx=1, tx=-2}", None).unwrap();
        assert_eq!(datum_to_string(&d, &counts), "{rx=1, tx=-2}");
        assert_eq!(datum_to_bare(&d, &counts), "rx=1 tx=-2");
        assert_eq!(parse(&counts, "rx=x"), Err("\"x\" is not a valid integer or range".into()));
        let d = datum_from_string(&ids, "{\"a b\"=\"\", c=\"1\"}", None).unwrap();
        assert_eq!(datum_to_bare(&d, &ids), "a b= c=1");
        assert_eq!(datum_to_string(&d, &ids), "{\"a b\"=\"\", c=\"1\"}");
    }

    #[test]
    fn english_type_names() {
        assert_eq!(type_to_english(&ty(json!("string"))), "string");
        assert_eq!(type_to_english(&ty(json!({"key": "uuid", "min": 0}))), "set of up to 1 uuids");
        assert_eq!(type_to_english(&ty(json!({"key": "string", "min": 1, "max": 3}))), "set of 1 to 3 strings");
        assert_eq!(
            type_to_english(&ty(json!({"key": "string", "min": 1, "max": "unlimited"}))),
            "set of 1 or more strings"
        );
        assert_eq!(
            type_to_english(&ty(json!({"key": "string", "value": "real", "min": 0, "max": "unlimited"}))),
            "map of (string, real) pairs"
        );
    }

    #[test]
    fn round_trips() {
        let types = [
            json!("string"),
            json!("integer"),
            json!("real"),
            json!("boolean"),
            json!("uuid"),
            json!({"key": "string", "min": 0, "max": "unlimited"}),
            json!({"key": "real", "min": 0, "max": "unlimited"}),
            json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}),
            json!({"key": "integer", "value": "uuid", "min": 0, "max": "unlimited"}),
        ];
        let strings = ["a", "", "a b", "\"q\"", "\\", "123", "true", "é", "x=y", "{}", "[", "\t", "@x"];
        let reals = [0.0, -1.5, 0.1, 1e-7, 3.0e20];
        for tj in types {
            let t = ty(tj);
            for i in 0..strings.len() {
                let atom = |bt: &BaseType, k: usize| match bt.atype {
                    AtomicType::String => Atom::string(strings[k % strings.len()]),
                    AtomicType::Integer => Atom::Integer(k as i64 * 1000 - 3000),
                    AtomicType::Real => Atom::Real(reals[k % reals.len()]),
                    AtomicType::Boolean => Atom::Boolean(k % 2 == 0),
                    AtomicType::Uuid => Atom::Uuid(Uuid::from_u128(k as u128 * 0x1234_5678_9abc)),
                };
                let n = if t.max == 1 { 1 } else { i % 4 };
                let mut keys: Vec<Atom> = (0..n).map(|k| atom(&t.key, i + k)).collect();
                keys.sort();
                keys.dedup();
                let values = t.value.as_ref().map(|vt| (0..keys.len()).map(|k| atom(vt, i * 7 + k)).collect());
                let d = Datum { keys, values };
                let text = datum_to_string(&d, &t);
                assert_eq!(datum_from_string(&t, &text, None), Ok(d.clone()), "{text}");
            }
        }
    }
}
