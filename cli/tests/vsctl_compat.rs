//! `oxvs vsctl` against Open vSwitch's `ovs-vsctl` (Debian's openvswitch-switch,
//! installed by `cargo xtask setup`), both talking to Open vSwitch's own
//! ovsdb-server.
//!
//! Every sequence of `cases.rs` runs on two servers started on copies of the
//! same database (made by running the sequence's setup steps with the real
//! ovs-vsctl): real ovs-vsctl against one, ours against the other. Per
//! command the hard checks are the three: stdout byte for byte (UUIDs
//! numbered by first appearance on each side), whether stderr is empty, and
//! the exit status. When ours fails a command, its database must be as before
//! the command. After the sequence the two databases must hold the same
//! content. Differences in the text of stderr (the program name and log
//! timestamps aside) are printed as a softer check but do not fail the test.
//!
//! The implementation under test is `oxvs vsctl` of this workspace, or
//! `$OXVS_VSCTL` run as is (e.g. a link named `ovs-vsctl`).
#[path = "vsctl_compat/cases.rs"]
mod cases;
#[path = "vsctl_compat/harness.rs"]
mod harness;

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use cases::{CASES, Case};
use harness::{Run, Server, SetupCache, TempDir, Tool, UuidMap, dump, need_ovs, split_words, stderr_text, vsctl};

/// Sequences run side by side: each waits mostly on processes.
const THREADS: usize = 3;

/// What one sequence found.
#[derive(Default)]
struct Outcome {
    /// Hard failures: stdout, stderr emptiness, status, database content.
    hard: Vec<String>,
    /// Different stderr text where both wrote something.
    soft: Vec<String>,
    commands: usize,
}

/// Replaces each `{{TABLE COND}}` by the UUID of the one matching row on
/// the server `db`, found with the real ovs-vsctl.
fn resolve(dir: &Path, db: &str, line: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").ok_or_else(|| format!("unclosed {{{{ in {line:?}"))? + start;
        out.push_str(&rest[..start]);
        let mut args = vec!["--bare".to_string(), "--columns=_uuid".to_string(), "find".to_string()];
        args.extend(split_words(&rest[start + 2..end]));
        let r = vsctl(Tool::Real, dir, db, &args);
        let uuid = r.stdout.trim();
        if !r.ok() || uuid.len() != 36 {
            return Err(format!("{line:?}: `ovs-vsctl {}` gave {:?} ({})", args.join(" "), r.stdout, r.status));
        }
        out.push_str(uuid);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn sorted_lines(s: &str) -> String {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort();
    v.join("\n")
}

fn show(r: &Run, stdout: &str) -> String {
    format!("{} stdout={stdout:?} stderr={:?}", r.status, r.stderr)
}

fn run_case(case: &Case, setups: &SetupCache) -> Outcome {
    let mut o = Outcome::default();
    let setup: Vec<Vec<String>> = case.setup.iter().map(|s| split_words(s)).collect();
    let base = setups.base(&setup);
    let dir = TempDir::new(case.name);
    let (db_a, db_b) = (dir.0.join("a.db"), dir.0.join("b.db"));
    fs::copy(&base, &db_a).unwrap();
    fs::copy(&base, &db_b).unwrap();
    let (a, b) = (Server::start(&dir.0, "a", &db_a), Server::start(&dir.0, "b", &db_b));
    let (mut map_a, mut map_b) = (UuidMap::default(), UuidMap::default());
    for (i, raw) in case.cmds.iter().enumerate() {
        o.commands += 1;
        if let Some(rest) = raw.strip_prefix("& ") {
            let at = format!("{} #{} `& {rest}`", case.name, i + 1);
            o.hard.extend(run_concurrent(&at, rest, &dir.0, &a.db(), &b.db()));
            continue;
        }
        let (sorted, line) = match raw.strip_prefix("~ ") {
            Some(l) => (true, l),
            None => (false, *raw),
        };
        let at = format!("{} #{} `ovs-vsctl {line}`", case.name, i + 1);
        let la = match resolve(&dir.0, &a.db(), line) {
            Ok(l) => l,
            Err(e) => {
                o.hard.push(format!("{at}: bad case (on the real side): {e}"));
                return o;
            }
        };
        let lb = match resolve(&dir.0, &b.db(), line) {
            Ok(l) => l,
            Err(e) => {
                o.hard.push(format!("{at}: not run: the row it names is not in ours' database: {e}"));
                continue;
            }
        };
        let before_b = dump(&b.db());
        let real = vsctl(Tool::Real, &dir.0, &a.db(), &split_words(&la));
        let ours = vsctl(Tool::Ours, &dir.0, &b.db(), &split_words(&lb));
        let (mut out_r, mut out_o) = (map_a.normalize(&real.stdout), map_b.normalize(&ours.stdout));
        if sorted {
            (out_r, out_o) = (sorted_lines(&out_r), sorted_lines(&out_o));
        }
        if std::env::var_os("VSCTL_COMPAT_VERBOSE").is_some() {
            eprintln!("{at}\n  real: {}\n  ours: {}", show(&real, &out_r), show(&ours, &out_o));
        }
        let mut bad = Vec::new();
        if out_r != out_o {
            bad.push("stdout differs");
        }
        if real.stderr.is_empty() != ours.stderr.is_empty() {
            bad.push("stderr empty on one side only");
        }
        if real.status != ours.status {
            bad.push("exit status differs");
        }
        if !bad.is_empty() {
            o.hard.push(format!(
                "{at}: {}\n    real: {}\n    ours: {}",
                bad.join(", "),
                show(&real, &out_r),
                show(&ours, &out_o)
            ));
        } else if !real.stderr.is_empty() && stderr_text(&real.stderr) != stderr_text(&ours.stderr) {
            o.soft.push(format!("{at}:\n    real stderr: {:?}\n    ours stderr: {:?}", real.stderr, ours.stderr));
        }
        if !ours.ok() {
            let after_b = dump(&b.db());
            if after_b != before_b {
                o.hard.push(format!(
                    "{at}: ours failed ({}) but changed the database:\n{}",
                    ours.status,
                    diff(&before_b, &after_b)
                ));
            }
        }
    }
    let (da, db) = (dump(&a.db()), dump(&b.db()));
    if da != db {
        o.hard.push(format!("{}: databases differ after the sequence (real vs ours):\n{}", case.name, diff(&da, &db)));
    }
    o
}

/// A `& N COMMAND` line: N copies of COMMAND (`{i}` replaced by 1..=N)
/// run at the same time on each side; copy by copy, stdout, whether stderr
/// is empty and the exit status must match. The database comparison at the
/// end of the sequence then shows whether every copy's change landed.
fn run_concurrent(at: &str, line: &str, dir: &Path, db_a: &str, db_b: &str) -> Vec<String> {
    let Some((n, cmd)) = line.split_once(' ').and_then(|(n, c)| Some((n.parse::<usize>().ok()?, c))) else {
        return vec![format!("{at}: bad case: want `& N COMMAND`")];
    };
    let run_all = |tool: Tool, db: &str| -> Vec<Run> {
        std::thread::scope(|s| {
            let runs: Vec<_> = (1..=n)
                .map(|k| {
                    let args = split_words(&cmd.replace("{i}", &k.to_string()));
                    s.spawn(move || vsctl(tool, dir, db, &args))
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    };
    let (real, ours) = (run_all(Tool::Real, db_a), run_all(Tool::Ours, db_b));
    let mut bad = Vec::new();
    for (k, (r, o)) in real.iter().zip(&ours).enumerate() {
        if r.stdout != o.stdout || r.stderr.is_empty() != o.stderr.is_empty() || r.status != o.status {
            bad.push(format!(
                "{at} copy {}:\n    real: {}\n    ours: {}",
                k + 1,
                show(r, &r.stdout),
                show(o, &o.stdout)
            ));
        }
    }
    bad
}

/// The lines only in `a` (-) and only in `b` (+).
fn diff(a: &str, b: &str) -> String {
    let mut s = String::new();
    for l in a.lines().filter(|l| !b.lines().any(|m| m == *l)) {
        let _ = writeln!(s, "    - {l}");
    }
    for l in b.lines().filter(|l| !a.lines().any(|m| m == *l)) {
        let _ = writeln!(s, "    + {l}");
    }
    s
}

#[test]
fn vsctl_matches_ovs_vsctl() {
    need_ovs();
    assert!(CASES.len() >= 80, "only {} sequences", CASES.len());
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "sequence names must be unique");

    let t = Instant::now();
    let setups = SetupCache::new();
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, Outcome)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(case) = CASES.get(i) else { break };
                        done.push((i, run_case(case, &setups)));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    outcomes.sort_by_key(|(i, _)| *i);

    let commands: usize = outcomes.iter().map(|(_, o)| o.commands).sum();
    let failed: Vec<&str> = outcomes.iter().filter(|(_, o)| !o.hard.is_empty()).map(|(i, _)| CASES[*i].name).collect();
    let soft: usize = outcomes.iter().map(|(_, o)| o.soft.len()).sum();
    for (_, o) in &outcomes {
        for s in &o.soft {
            eprintln!("stderr text differs (soft check): {s}");
        }
    }
    for (_, o) in &outcomes {
        for h in &o.hard {
            eprintln!("MISMATCH {h}");
        }
    }
    eprintln!(
        "vsctl compat: {} sequences, {commands} commands in {:.1} s; {} sequences differ ({}); {soft} stderr texts differ",
        CASES.len(),
        t.elapsed().as_secs_f64(),
        failed.len(),
        failed.join(", ")
    );
    assert!(
        failed.is_empty(),
        "{} of {} sequences differ from ovs-vsctl: {}",
        failed.len(),
        CASES.len(),
        failed.join(", ")
    );
}
