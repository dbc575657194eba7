//! OVS's log line format (`2026-11-24T06:00:00.123Z|00042|module|INFO|text`),
//! to a log file when one is set and to stderr for warnings and worse.
use std::{
    fs::File,
    io::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

static SEQ: AtomicU64 = AtomicU64::new(1);
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Sends log lines to `path` (appending) from now on.
pub fn set_log_file(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    *FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    Ok(())
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by
/// Howard Hinnant's algorithm: the tools here print dates without a date
/// library.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn timestamp() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn log(level: &str, module: &str, text: &str) {
    let line = format!("{}|{:05}|{module}|{level}|{text}\n", timestamp(), SEQ.fetch_add(1, Ordering::Relaxed));
    if let Some(f) = FILE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        let _ = f.write_all(line.as_bytes());
    }
    if matches!(level, "WARN" | "ERR" | "EMER") {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

pub fn info(module: &str, text: &str) {
    log("INFO", module, text);
}
pub fn warn(module: &str, text: &str) {
    log("WARN", module, text);
}
pub fn err(module: &str, text: &str) {
    log("ERR", module, text);
}
pub fn emer(module: &str, text: &str) {
    log("EMER", module, text);
}
