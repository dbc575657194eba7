//! `oxvs vsctl` (or the binary run as `ovs-vsctl`): a drop-in for Open
//! vSwitch's ovs-vsctl. The flow is ovs-vsctl's: parse the command line,
//! check what can be checked offline, connect to the database and wait for
//! the replica, run every command against one transaction (reading through
//! it, with `verify` where ovs-vsctl makes them), bump next_cfg unless
//! --no-wait, commit; if the database changed under us, wait for the update
//! and run everything again; print each command's output; then, unless
//! --no-wait, wait until ovs-vswitchd reports cur_cfg >= next_cfg.
mod bridge_commands;
mod cache;
mod commands;
mod config_commands;
mod context;
mod db_commands;
mod extra_commands;
mod options;
mod show;
mod vlog;

use oxvs_ovsdb::idl;

use std::{process::ExitCode, sync::OnceLock, time::Duration};

use oxvs_ovsdb::DatabaseSchema;

use crate::table::{TablePrinter, TableStyle};
use commands::Mode;
use context::{Context, Flow};
use idl::{Idl, IdlOptions, TxnStatus};
use options::{Action, GlobalOptions, ParsedCommand};

/// The Open vSwitch release whose ovs-vsctl this one reproduces.
const OVS_COMPAT_VERSION: &str = "3.1.0";

const VSWITCH_SCHEMA: &str = include_str!("../../../ovsdb/schemas/vswitch.ovsschema");

/// The Open_vSwitch schema ovs-vsctl is built for; names are resolved
/// against it, as ovs-vsctl resolves them against its compiled-in IDL.
pub fn vswitch_schema_ref() -> &'static DatabaseSchema {
    static SCHEMA: OnceLock<DatabaseSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let json: serde_json::Value = serde_json::from_str(VSWITCH_SCHEMA).expect("embedded schema is JSON");
        DatabaseSchema::from_json(&json).expect("embedded schema is valid")
    })
}

#[cfg(test)]
pub fn vswitch_schema() -> DatabaseSchema {
    vswitch_schema_ref().clone()
}

/// OVS's process_escape_args: words joined by spaces, quoted when needed.
pub fn process_escape_args(words: &[String]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if w.contains([' ', '\t', '\r', '\n', '\x0b', '\\', '\'', '"']) {
            out.push('"');
            for c in w.chars() {
                if c == '\\' || c == '"' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out += w;
        }
    }
    out
}

/// A warning on stderr in the console log's form (see [`vlog`]).
pub fn warn(module: &str, text: &str) {
    vlog::warn(module, text);
}

/// What started us, for the transaction comment, as ovs-vsctl reports it:
/// it reads the parent's command line up to a newline and appends
/// " (pid N)", but prints it as a C string, so with the usual NUL after the
/// parent's program name only that name shows.
fn parent_process_info() -> Option<String> {
    let ppid = std::os::unix::process::parent_id();
    if ppid == 0 {
        return Some("init (pid 0)".into());
    }
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
    let line = cmdline.split(|b| *b == b'\n').next().unwrap_or_default();
    Some(match line.iter().position(|b| *b == 0) {
        Some(nul) => String::from_utf8_lossy(&line[..nul]).into_owned(),
        None => format!("{} (pid {ppid})", String::from_utf8_lossy(line)),
    })
}

fn default_db() -> String {
    let rundir = std::env::var("OVS_RUNDIR").ok().filter(|s| !s.is_empty()).unwrap_or("/var/run/openvswitch".into());
    format!("unix:{rundir}/db.sock")
}

fn fatal(msg: &str) -> ExitCode {
    eprintln!("ovs-vsctl: {msg}");
    ExitCode::from(1)
}

pub fn main(prog: &str, args: Vec<String>) -> ExitCode {
    let action = match options::parse_args(&args) {
        Ok(a) => a,
        Err(e) => return fatal(&e),
    };
    let (global, cmds) = match action {
        Action::Run(g, c) => (g, c),
        Action::Help => {
            print!("{}", usage(prog));
            return ExitCode::SUCCESS;
        }
        Action::Version => {
            // Scripts read the Open vSwitch version ovs-vsctl reports from
            // the first line; we report the release whose behaviour we follow.
            println!(
                "ovs-vsctl (Open vSwitch) {OVS_COMPAT_VERSION}\nDB Schema {}\n(oxvs {}: ovs-vsctl compatible)",
                vswitch_schema_ref().version,
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Action::PrintCommands => {
            print!("{}", commands::print_commands());
            return ExitCode::SUCCESS;
        }
        Action::PrintOptions => {
            print!("{}", options::print_options());
            return ExitCode::SUCCESS;
        }
    };
    for c in &cmds {
        if let Err(e) = db_commands::precheck(c.syntax.name, &c.argv, c.value("--columns")) {
            return fatal(&e);
        }
    }
    if cmds.iter().any(|c| c.syntax.mode == Mode::ReadWrite) {
        vlog::set_next_seq(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fatal(&format!("cannot start the runtime: {e}")),
    };
    let timeout = global
        .timeout
        .or_else(|| std::env::var("OVS_CTL_TIMEOUT").ok().and_then(|s| s.parse::<u32>().ok()).filter(|t| *t > 0));
    // The transaction's comment names the whole command line, as ovs-vsctl's
    // does (argv[0] included).
    let args_text = process_escape_args(&std::env::args().collect::<Vec<_>>());
    let result = runtime.block_on(async {
        let work = run(&global, &cmds, &args_text);
        match timeout {
            Some(secs) => tokio::time::timeout(Duration::from_secs(secs.into()), work).await.ok(),
            None => Some(work.await),
        }
    });
    match result {
        // Like ovs-vsctl's alarm: die of SIGALRM.
        None => {
            warn("fatal_signal", "terminating with signal 14 (Alarm clock)");
            // SAFETY: restoring the default disposition and raising a signal
            // in a single-threaded process.
            unsafe {
                libc::signal(libc::SIGALRM, libc::SIG_DFL);
                libc::raise(libc::SIGALRM);
            }
            ExitCode::from(142)
        }
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(Flow::Exit(code))) => ExitCode::from(code),
        Some(Err(Flow::Error(e))) => fatal(&e),
        Some(Err(Flow::TryAgain)) => fatal("transaction could not be completed"),
    }
}

/// One command's result: text, or a table to format.
struct Output {
    text: String,
    table: Option<crate::table::Table>,
}

enum Attempt {
    /// `new_ifaces`: the real UUIDs of the interfaces the transaction created.
    Done {
        outputs: Vec<Output>,
        wait_for: Option<i64>,
        new_ifaces: Vec<uuid::Uuid>,
    },
    TryAgain,
}

async fn connect(db: &str, retry: bool, ssl: &idl::SslOptions) -> Result<Idl, Flow> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let options =
            IdlOptions { database: "Open_vSwitch".into(), reconnect: retry, ssl: ssl.clone(), ..Default::default() };
        match Idl::connect(db, options).await {
            Ok(idl) => return Ok(idl),
            Err(e) if !retry => return Err(Flow::Error(format!("{db}: {e}"))),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
    }
}

async fn run(g: &GlobalOptions, cmds: &[ParsedCommand], args_text: &str) -> Result<(), Flow> {
    let db = g.db.clone().unwrap_or_else(default_db);
    let mut idl = connect(&db, g.retry, &g.ssl).await?;
    loop {
        let seqno = idl.seqno();
        match do_vsctl(&mut idl, g, cmds, args_text).await? {
            Attempt::Done { outputs, wait_for, new_ifaces } => {
                print_outputs(g, &outputs);
                if let Some(next_cfg) = wait_for {
                    wait_for_reload(&mut idl, next_cfg).await?;
                    report_failed_ifaces(&idl, &new_ifaces);
                }
                return Ok(());
            }
            Attempt::TryAgain => {
                if idl.seqno() == seqno {
                    idl.wait_for_update().await.map_err(|e| Flow::Error(format!("{db}: {e}")))?;
                }
            }
        }
    }
}

fn print_outputs(g: &GlobalOptions, outputs: &[Output]) {
    use std::io::Write;
    let mut printer = TablePrinter::new();
    let style: &TableStyle = &g.style;
    let mut out = String::new();
    for o in outputs {
        if let Some(t) = &o.table {
            out += &printer.format(t, style);
        } else if g.oneline {
            for c in o.text.strip_suffix('\n').unwrap_or(&o.text).chars() {
                match c {
                    '\n' => out += "\\n",
                    '\\' => out += "\\\\",
                    c => out.push(c),
                }
            }
            out.push('\n');
        } else {
            out += &o.text;
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// Where ovs-vswitchd logs by default, as OVS's ovs_logdir() says.
fn ovs_logdir() -> String {
    std::env::var("OVS_LOGDIR").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/var/log/openvswitch".into())
}

/// After ovs-vswitchd has reloaded: the interfaces we created that it
/// could not set up (no ofport, or -1) are reported on stderr, as OVS's
/// post_db_reload_do_checks does; the exit status stays 0.
fn report_failed_ifaces(idl: &Idl, new_ifaces: &[uuid::Uuid]) {
    let replica = idl.replica();
    let Some(table) = replica.table("Interface") else { return };
    let mut any = false;
    for uuid in new_ifaces {
        let Some(row) = table.rows.get(uuid) else { continue };
        let ofport = row.get("ofport").and_then(|d| d.keys.first()).and_then(|a| a.as_integer());
        if ofport.is_some_and(|p| p != -1) {
            continue;
        }
        let string = |col: &str| {
            row.get(col).and_then(|d| d.keys.first()).and_then(|a| a.as_str().map(str::to_string)).unwrap_or_default()
        };
        let name = string("name");
        let error = string("error");
        if error.is_empty() {
            eprintln!("ovs-vsctl: Error detected while setting up '{name}'.  See ovs-vswitchd log for details.");
        } else {
            eprintln!(
                "ovs-vsctl: Error detected while setting up '{name}': {error}.  See ovs-vswitchd log for details."
            );
        }
        any = true;
    }
    if any {
        eprintln!("ovs-vsctl: The default log directory is \"{}\".", ovs_logdir());
    }
}

/// Waits until ovs-vswitchd has caught up with our change.
async fn wait_for_reload(idl: &mut Idl, next_cfg: i64) -> Result<(), Flow> {
    loop {
        let replica = idl.replica();
        let done = replica.table("Open_vSwitch").is_some_and(|t| {
            t.rows
                .values()
                .any(|r| r.get("cur_cfg").and_then(|d| d.keys.first()).and_then(|a| a.as_integer()) >= Some(next_cfg))
        });
        if done {
            return Ok(());
        }
        idl.wait_for_update().await.map_err(|e| Flow::Error(e.to_string()))?;
    }
}

async fn do_vsctl(idl: &mut Idl, g: &GlobalOptions, cmds: &[ParsedCommand], args_text: &str) -> Result<Attempt, Flow> {
    let schema = vswitch_schema_ref();
    let mut txn = idl.txn();
    if g.dry_run {
        txn.set_dry_run(true);
    }
    match parent_process_info() {
        Some(parent) => txn.comment(&format!("ovs-vsctl (invoked by {parent}): {args_text}")),
        None => txn.comment(&format!("ovs-vsctl: {args_text}")),
    }
    let existing_ovs = idl.replica().table("Open_vSwitch").and_then(|t| t.rows.keys().next().copied());
    let ovs = match existing_ovs {
        Some(u) => u,
        None => txn.insert("Open_vSwitch"),
    };

    let mut ctx = Context::new(schema, idl.replica(), txn, ovs);
    let mut outputs = Vec::with_capacity(cmds.len());
    for (i, c) in cmds.iter().enumerate() {
        ctx.argv = c.argv.clone();
        ctx.options = c.options.clone();
        ctx.last_command = i + 1 == cmds.len();
        ctx.output.clear();
        ctx.table = None;
        if let Some(run) = c.syntax.run {
            match run(&mut ctx) {
                Ok(()) => {}
                Err(Flow::TryAgain) => return Ok(Attempt::TryAgain),
                Err(e) => return Err(e),
            }
        }
        outputs.push(Output { text: std::mem::take(&mut ctx.output), table: ctx.table.take() });
    }

    for (name, sym) in &ctx.symbols {
        if !sym.created {
            return Err(Flow::Error(format!(
                "row id \"{name}\" is referenced but never created (e.g. with \"-- --id={name} create ...\")"
            )));
        }
        if !sym.strong_ref {
            if !sym.weak_ref {
                warn(
                    "vsctl",
                    &format!(
                        "row id \"{name}\" was created but no reference to it was inserted, so it will not actually appear in the database"
                    ),
                );
            } else {
                warn(
                    "vsctl",
                    &format!(
                        "row id \"{name}\" was created but only a weak reference to it was inserted, so it will not actually appear in the database"
                    ),
                );
            }
        }
    }

    let new_ifaces = std::mem::take(&mut ctx.new_ifaces);
    let mut txn = ctx.txn;
    if g.wait_for_reload {
        // Sent only along with some other change (OVS: force=false).
        txn.increment("Open_vSwitch", &ovs, "next_cfg");
    }
    let outcome = idl.commit(txn).await.map_err(|e| Flow::Error(e.to_string()))?;
    match outcome.status {
        TxnStatus::Unchanged | TxnStatus::Success => {}
        TxnStatus::TryAgain => return Ok(Attempt::TryAgain),
        TxnStatus::Aborted => return Err(Flow::Error("transaction aborted".into())),
        TxnStatus::NotLocked => return Err(Flow::Error("database not locked".into())),
        TxnStatus::Error(e) => {
            // OVS's IDL logs the error too before ovs-vsctl reports it.
            warn("ovsdb_idl", &format!("transaction error: {e}"));
            return Err(Flow::Error(format!("transaction error: {e}")));
        }
    }
    // "create" prints the row's real UUID.
    for (c, o) in cmds.iter().zip(outputs.iter_mut()) {
        if c.syntax.name == "create"
            && let Ok(temp) = uuid::Uuid::parse_str(&o.text)
        {
            let real = outcome.inserted.get(&temp).copied().unwrap_or(temp);
            o.text = format!("{real}\n");
        }
    }
    let wait_for =
        (g.wait_for_reload && outcome.status == TxnStatus::Success).then(|| outcome.increment_new_value.unwrap_or(0));
    // Rows deleted again within the transaction were never inserted.
    let new_ifaces = new_ifaces.iter().filter_map(|temp| outcome.inserted.get(temp).copied()).collect();
    Ok(Attempt::Done { outputs, wait_for, new_ifaces })
}

fn usage(prog: &str) -> String {
    let mut s = format!(
        "{prog}: ovs-vswitchd management utility\nusage: {prog} [OPTIONS] COMMAND [ARG...]\n\nCommands (use `--` between commands to run several in one transaction):\n"
    );
    for c in commands::COMMANDS {
        s += &format!("  {} {}\n", c.name, c.arguments);
    }
    s += &format!(
        "\nOptions:\n  --db=DATABASE               connect to DATABASE\n                              (default: {})\n  --no-wait                   do not wait for ovs-vswitchd to reconfigure\n  --retry                     keep trying to connect to server forever\n  -t, --timeout=SECS          wait at most SECS seconds for ovs-vswitchd\n  --dry-run                   do not commit changes to database\n  --oneline                   print exactly one line of output per command\n  -f, --format=FORMAT         set output formatting to FORMAT (table, list, html, csv, json)\n  -d, --data=FORMAT           set table cell output formatting to FORMAT (string, bare, json)\n  --no-headings               omit table heading row\n  --pretty                    pretty-print JSON in output\n  --bare                      equivalent to \"--format=list --data=bare --no-headings\"\n  -h, --help                  display this help message\n  -V, --version               display version information\n",
        default_db()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_like_ovs() {
        let w = |v: &[&str]| process_escape_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(w(&["add-port", "br0", "p1"]), "add-port br0 p1");
        assert_eq!(w(&["a b", "x\"y"]), "\"a b\" \"x\\\"y\"");
    }

    #[test]
    fn embedded_schema_is_open_vswitch() {
        assert_eq!(vswitch_schema_ref().name, "Open_vSwitch");
    }
}
