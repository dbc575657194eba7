//! Figures (min / median / max over runs), ratios against the anchors with
//! their targets, the printed tables and `target/bench/<name>.json`.
use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

/// How a kind of figure is measured: a short label and one line of
/// explanation, printed once under the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    pub label: &'static str,
    pub unit: &'static str,
    pub how: &'static str,
}

/// One measured quantity over several runs.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub method: Method,
    pub values: Vec<f64>,
}

impl Figure {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    pub fn min(&self) -> f64 {
        self.sorted()[0]
    }
    pub fn max(&self) -> f64 {
        *self.sorted().last().unwrap()
    }
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }
}

/// `name` = oxvs figure / anchor figure, higher is better.
#[derive(Clone, Debug)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub against: String,
    pub target: f64,
    /// What the ratio is made of, one line.
    pub basis: String,
    /// A ratio of per-packet costs (which the targets apply to), not of rates.
    pub cost: bool,
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub ratios: Vec<Ratio>,
}

impl Report {
    pub fn add(&mut self, name: impl Into<String>, method: Method, values: Vec<f64>) -> Result<()> {
        let name = name.into();
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            bail!("figure {name} could not be measured: {values:?}");
        }
        self.figures.push(Figure { name, method, values });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<&Figure> {
        self.figures.iter().find(|f| f.name == name).with_context(|| format!("no figure {name}"))
    }

    /// A ratio of medians, where a bigger `oxvs` is better (Mpps).
    pub fn ratio_higher_better(
        &mut self,
        name: &str,
        oxvs: &str,
        anchor: &str,
        against: &str,
        target: f64,
    ) -> Result<()> {
        let (o, a) = (self.get(oxvs)?.median(), self.get(anchor)?.median());
        let basis = format!("median {oxvs} / median {anchor}");
        self.push_ratio(name, o / a, against, target, basis, false)
    }

    /// A ratio of medians of costs (ns/packet): anchor / oxvs, so that higher
    /// is better as for rates.
    pub fn ratio_lower_better(
        &mut self,
        name: &str,
        oxvs: &str,
        anchor: &str,
        against: &str,
        target: f64,
    ) -> Result<()> {
        let (o, a) = (self.get(oxvs)?.median(), self.get(anchor)?.median());
        if o <= 0.0 || a <= 0.0 {
            bail!("ratio {name}: {oxvs} ({o:.1}) or {anchor} ({a:.1}) is not a positive cost");
        }
        let basis = format!("median {anchor} / median {oxvs}");
        self.push_ratio(name, a / o, against, target, basis, true)
    }

    fn push_ratio(
        &mut self,
        name: &str,
        value: f64,
        against: &str,
        target: f64,
        basis: String,
        cost: bool,
    ) -> Result<()> {
        if !value.is_finite() {
            bail!("ratio {name} could not be computed ({basis})");
        }
        self.ratios.push(Ratio { name: name.into(), value, against: against.into(), target, basis, cost });
        Ok(())
    }

    pub fn print_figures(&self) {
        println!("\n{:<38} {:>10} {:>10} {:>10} {:>4}  unit", "figure", "min", "median", "max", "runs");
        for f in &self.figures {
            let p = match f.method.unit {
                "Mpps" | "ratio" => 3,
                "instructions" | "bytes" => 0,
                _ => 1,
            };
            println!(
                "{:<38} {:>10.p$} {:>10.p$} {:>10.p$} {:>4}  {}",
                f.name,
                f.min(),
                f.median(),
                f.max(),
                f.values.len(),
                f.method.unit
            );
        }
        println!("\nhow each kind of figure was measured:");
        let mut seen: Vec<Method> = Vec::new();
        for f in &self.figures {
            if !seen.contains(&f.method) {
                seen.push(f.method);
                println!("  {:<11} {}", f.method.label, f.method.how);
            }
        }
    }

    pub fn print_ratios(&self) {
        println!("\n{:<40} {:>7} {:>7}  {:<8} basis", "ratio (higher is better)", "value", "target", "");
        for r in &self.ratios {
            let met = if r.value >= r.target { "met" } else { "NOT met" };
            println!("{:<40} {:>7.3} {:>7}  {:<8} {}", r.name, r.value, format!(">={}", r.target), met, r.basis);
        }
        let count = |cost: bool| {
            let v: Vec<&Ratio> = self.ratios.iter().filter(|r| r.cost == cost).collect();
            (v.iter().filter(|r| r.value >= r.target).count(), v.len())
        };
        let ((cm, cn), (rm, rn)) = (count(true), count(false));
        println!(
            "targets met: {rm} of {rn} Mpps ratios (the issue's targets); {cm} of {cn} ratios of the XDP program's own cost \
             (against a 16-instruction redirect: how much of the switch's time is the program)"
        );
    }

    /// Writes the report in the shape DESIGN.md §6 gives, keys in that order
    /// (serde_json's map would sort them).
    pub fn write_json(&self, bench: &str, path: &Path) -> Result<()> {
        let s = |v: serde_json::Value| v.to_string();
        let figures: Vec<String> = self
            .figures
            .iter()
            .map(|f| {
                format!(
                    "    {{\"name\": {}, \"unit\": {}, \"min\": {}, \"median\": {}, \"max\": {}, \"runs\": {}}}",
                    s(json!(f.name)),
                    s(json!(f.method.unit)),
                    s(json!(f.min())),
                    s(json!(f.median())),
                    s(json!(f.max())),
                    f.values.len()
                )
            })
            .collect();
        let ratios: Vec<String> = self
            .ratios
            .iter()
            .map(|r| {
                format!(
                    "    {{\"name\": {}, \"value\": {}, \"against\": {}}}",
                    s(json!(r.name)),
                    s(json!(r.value)),
                    s(json!(r.against))
                )
            })
            .collect();
        let doc = format!(
            "{{\n  \"bench\": {},\n  \"machine\": {},\n  \"when\": {},\n  \"figures\": [\n{}\n  ],\n  \"ratios\": [\n{}\n  ]\n}}\n",
            s(json!(bench)),
            s(json!(machine())),
            s(json!(now_rfc3339())),
            figures.join(",\n"),
            ratios.join(",\n")
        );
        // Check that what was written by hand is JSON.
        serde_json::from_str::<serde_json::Value>(&doc).context("the report is not valid JSON")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        }
        std::fs::write(path, doc).with_context(|| path.display().to_string())
    }
}

/// `<hostname> / <kernel release> / <n> cpus`.
pub fn machine() -> String {
    // SAFETY: utsname is plain data; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    unsafe { libc::uname(&mut u) };
    let s = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{} / Linux {} / {} cpus", s(&u.nodename), s(&u.release), cpus)
}

/// The current UTC time as RFC 3339 (`2026-11-24T06:00:00Z`), without a date
/// library.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = oxvs_ovsdb::vlog::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let m = Method { label: "x", unit: "Mpps", how: "" };
        let f = |v: &[f64]| Figure { name: "x".into(), method: m, values: v.to_vec() };
        assert_eq!(f(&[3.0, 1.0, 2.0]).median(), 2.0);
        assert_eq!(f(&[4.0, 1.0, 2.0, 3.0]).median(), 2.5);
        assert_eq!((f(&[4.0, 1.0]).min(), f(&[4.0, 1.0]).max()), (1.0, 4.0));
    }

    #[test]
    fn rfc3339_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }
}
