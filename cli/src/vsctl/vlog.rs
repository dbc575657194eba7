//! ovs-vsctl's console logging: the `-v`/`--verbose` settings (OVS's
//! vlog_set_levels_from_string) and the console pattern they may set
//! (`-vPATTERN:console:%c|%p|%m`), so that scripts and OVS's own tests that
//! match our warnings see them in the form they asked for.
use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

/// OVS's default console pattern.
const DEFAULT_CONSOLE_PATTERN: &str = "%D{%Y-%m-%dT%H:%M:%SZ}|%05N|%c%T|%p|%m";

/// OVS's log levels, least verbose first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off,
    Emer,
    Err,
    Warn,
    Info,
    Dbg,
}

impl Level {
    fn from_name(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => Level::Off,
            "emer" => Level::Emer,
            "err" => Level::Err,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "dbg" => Level::Dbg,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Emer => "EMER",
            Level::Err => "ERR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Dbg => "DBG",
        }
    }
}

fn is_destination(s: &str) -> bool {
    ["console", "syslog", "file"].iter().any(|d| d.eq_ignore_ascii_case(s))
}

struct Console {
    pattern: String,
    /// ovs-vsctl starts with every module at WARN on the console.
    default_level: Level,
    levels: BTreeMap<String, Level>,
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

fn with_console<T>(f: impl FnOnce(&mut Console) -> T) -> T {
    let mut guard = CONSOLE.lock().unwrap_or_else(|p| p.into_inner());
    let console = guard.get_or_insert_with(|| Console {
        pattern: DEFAULT_CONSOLE_PATTERN.into(),
        default_level: Level::Warn,
        levels: BTreeMap::new(),
    });
    f(console)
}

/// Sequence number of the next log message. ovs-vsctl logs "Called as ..."
/// (not shown on the console) first when its commands may write, so its
/// first warning is then number 2.
static LOG_SEQ: AtomicU32 = AtomicU32::new(1);

pub fn set_next_seq(n: u32) {
    LOG_SEQ.store(n, Ordering::Relaxed);
}

/// Applies one `-v` argument (`None`: plain `-v`, everything at DBG).
/// Settings for the syslog or the log file are accepted and have no
/// effect: ovs-vsctl logs to neither unless asked, and we log only warnings.
/// Unlike OVS we cannot list every module name, so any other word is taken
/// as a module.
pub fn set_verbosity(spec: Option<&str>) -> Result<(), String> {
    let Some(spec) = spec else {
        return with_console(|c| {
            c.default_level = Level::Dbg;
            c.levels.clear();
            Ok(())
        });
    };
    let is_sep = |c: char| matches!(c, ' ' | ',' | ':' | '\t');
    let mut rest = spec.trim_start_matches(is_sep);
    let mut next_word = || -> Option<&str> {
        let s = rest.trim_start_matches(is_sep);
        if s.is_empty() {
            return None;
        }
        let end = s.find(is_sep).unwrap_or(s.len());
        let word = &s[..end];
        // Like strtok_r: the remainder starts after the one delimiter.
        rest = s.get(end + 1..).unwrap_or("");
        Some(word)
    };
    let first = next_word();
    if first.is_some_and(|w| w.eq_ignore_ascii_case("PATTERN")) {
        let Some(dest) = next_word() else { return Err("missing destination".into()) };
        if !dest.eq_ignore_ascii_case("any") && !is_destination(dest) {
            return Err(format!("unknown destination \"{dest}\""));
        }
        if dest.eq_ignore_ascii_case("console") || dest.eq_ignore_ascii_case("any") {
            let pattern = rest.to_string();
            with_console(|c| c.pattern = pattern);
        }
        return Ok(());
    }
    if first.is_some_and(|w| w.eq_ignore_ascii_case("FACILITY")) {
        return Ok(());
    }
    let (mut module, mut level, mut dest): (Option<&str>, Option<Level>, Option<&str>) = (None, None, None);
    let mut word = first;
    while let Some(w) = word {
        if w.eq_ignore_ascii_case("any") {
        } else if is_destination(w) {
            if dest.is_some() {
                return Err("cannot specify multiple destinations".into());
            }
            dest = Some(w);
        } else if let Some(l) = Level::from_name(w) {
            if level.is_some() {
                return Err("cannot specify multiple levels".into());
            }
            level = Some(l);
        } else {
            if module.is_some() {
                return Err("cannot specify multiple modules".into());
            }
            module = Some(w);
        }
        word = next_word();
    }
    if dest.is_some_and(|d| !d.eq_ignore_ascii_case("console")) {
        return Ok(());
    }
    let level = level.unwrap_or(Level::Dbg);
    with_console(|c| match module {
        Some(m) => {
            c.levels.insert(m.to_string(), level);
        }
        None => {
            c.default_level = level;
            c.levels.clear();
        }
    });
    Ok(())
}

/// Logs `text` for `module` at `level` on stderr, if the console takes it.
pub fn log(module: &str, level: Level, text: &str) {
    let line = with_console(|c| {
        let limit = c.levels.get(module).copied().unwrap_or(c.default_level);
        (level != Level::Off && level <= limit).then(|| format_message(&c.pattern, module, level, text))
    });
    if let Some(line) = line {
        eprintln!("{line}");
    }
}

pub fn warn(module: &str, text: &str) {
    log(module, Level::Warn, text);
}

/// Formats one message by OVS's pattern language: `%[-][0][width]X` with X
/// one of A c d D E m N n p P r t T (unknown letters stand for themselves).
fn format_message(pattern: &str, module: &str, level: Level, text: &str) -> String {
    let seq = LOG_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut left = false;
        let mut pad = ' ';
        if chars.peek() == Some(&'-') {
            left = true;
            chars.next();
        }
        if chars.peek() == Some(&'0') {
            pad = '0';
            chars.next();
        }
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = width * 10 + d as usize;
            chars.next();
        }
        let letter = chars.next();
        // %c, %d and %D may take an argument in braces.
        let braces = if matches!(letter, Some('c' | 'd' | 'D')) && chars.peek() == Some(&'{') {
            chars.next();
            Some(chars.by_ref().take_while(|c| *c != '}').collect::<String>())
        } else {
            None
        };
        let field = match letter {
            None => break,
            Some('A') => "ovs-vsctl".to_string(),
            Some('c') => module.to_string(),
            // No time zone library here: local time is shown as UTC.
            Some('d') | Some('D') => strftime_utc(braces.as_deref().unwrap_or("%Y-%m-%d %H:%M:%S.###")),
            Some('E') => hostname(),
            Some('m') => text.trim_end_matches('\n').to_string(),
            Some('N') => seq.to_string(),
            Some('n') => "\n".to_string(),
            Some('p') => level.name().to_string(),
            Some('P') => std::process::id().to_string(),
            Some('r') => "0".to_string(),
            Some('t') => "main".to_string(),
            Some('T') => String::new(),
            Some('B') => "0".to_string(),
            Some(other) => other.to_string(),
        };
        let used = field.chars().count();
        let fill: String = std::iter::repeat_n(pad, width.saturating_sub(used)).collect();
        if left {
            out += &field;
            out += &fill;
        } else {
            out += &fill;
            out += &field;
        }
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The strftime conversions OVS's log formats use (%Y %m %d %H %M %S, plus
/// OVS's `###` for milliseconds), in UTC.
fn strftime_utc(format: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = oxvs_ovsdb::vlog::civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out += &format!("{y:04}"),
            Some('m') => out += &format!("{m:02}"),
            Some('d') => out += &format!("{d:02}"),
            Some('H') => out += &format!("{:02}", t / 3600),
            Some('M') => out += &format!("{:02}", t / 60 % 60),
            Some('S') => out += &format!("{:02}", t % 60),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out.replace("###", &format!("{:03}", now.subsec_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_fields_and_padding() {
        let s = format_message("%c|%p|%m", "db_ctl_base", Level::Warn, "hello\n");
        assert_eq!(s, "db_ctl_base|WARN|hello");
        let s = format_message("[%-6p][%5c]%%", "x", Level::Err, "");
        assert_eq!(s, "[ERR   ][    x]%");
        let s = format_message("%05N", "x", Level::Err, "");
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| c.is_ascii_digit()));
        let s = format_message("%D{%Y-%m-%dT%H:%M:%SZ}", "x", Level::Warn, "");
        assert_eq!(s.len(), 20);
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
    }

    #[test]
    fn spec_errors_like_ovs() {
        assert_eq!(set_verbosity(Some("PATTERN")).unwrap_err(), "missing destination");
        assert_eq!(set_verbosity(Some("PATTERN:nowhere:%m")).unwrap_err(), "unknown destination \"nowhere\"");
        assert_eq!(set_verbosity(Some("warn:dbg")).unwrap_err(), "cannot specify multiple levels");
        assert_eq!(set_verbosity(Some("console:file")).unwrap_err(), "cannot specify multiple destinations");
        assert_eq!(set_verbosity(Some("a:b")).unwrap_err(), "cannot specify multiple modules");
        assert!(set_verbosity(Some("reconnect:emer")).is_ok());
        assert!(set_verbosity(Some("syslog:off")).is_ok());
    }
}
