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
mod options;
mod show;

use oxvs_ovsdb::idl;

use std::{process::ExitCode, sync::OnceLock, time::Duration};

use oxvs_ovsdb::DatabaseSchema;

use crate::table::{TablePrinter, TableStyle};
use commands::Mode;
use context::{Context, Flow};
use idl::{Idl, IdlOptions, TxnStatus};
use options::{Action, GlobalOptions, ParsedCommand};

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

/// Sequence number of the next log message. ovs-vsctl logs "Called as ..."
/// (not shown on the console) first when its commands may write, so its
/// first warning is then number 2.
static LOG_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A warning on stderr in the form OVS's console log uses.
pub fn warn(module: &str, text: &str) {
    let seq = LOG_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (y, m, d) = oxvs_ovsdb::vlog::civil_from_days(secs.div_euclid(86400));
    let t = secs.rem_euclid(86400);
    eprintln!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z|{seq:05}|{module}|WARN|{text}", t / 3600, t / 60 % 60, t % 60);
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
            println!("ovs-vsctl (oxvs) {}\nDB Schema {}", env!("CARGO_PKG_VERSION"), vswitch_schema_ref().version);
            return ExitCode::SUCCESS;
        }
        Action::PrintCommands => {
            for c in commands::COMMANDS {
                let opts: String = c.options.split(',').filter(|o| !o.is_empty()).map(|o| format!("[{o}] ")).collect();
                println!("{opts},{},{}", c.name, c.arguments);
            }
            return ExitCode::SUCCESS;
        }
        Action::PrintOptions => {
            return ExitCode::SUCCESS;
        }
    };
    for c in &cmds {
        if let Err(e) = db_commands::precheck(c.syntax.name, &c.argv, c.value("--columns")) {
            return fatal(&e);
        }
    }
    if cmds.iter().any(|c| c.syntax.mode == Mode::ReadWrite) {
        LOG_SEQ.store(2, std::sync::atomic::Ordering::Relaxed);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fatal(&format!("cannot start the runtime: {e}")),
    };
    let timeout = global
        .timeout
        .or_else(|| std::env::var("OVS_CTL_TIMEOUT").ok().and_then(|s| s.parse::<u32>().ok()).filter(|t| *t > 0));
    let args_text = process_escape_args(&args);
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
    Done { outputs: Vec<Output>, wait_for: Option<i64> },
    TryAgain,
}

async fn connect(db: &str, retry: bool) -> Result<Idl, Flow> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let options = IdlOptions { database: "Open_vSwitch".into(), reconnect: retry, ..Default::default() };
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
    let mut idl = connect(&db, g.retry).await?;
    loop {
        let seqno = idl.seqno();
        match do_vsctl(&mut idl, g, cmds, args_text).await? {
            Attempt::Done { outputs, wait_for } => {
                print_outputs(g, &outputs);
                if let Some(next_cfg) = wait_for {
                    wait_for_reload(&mut idl, next_cfg).await?;
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
    txn.comment(&format!("ovs-vsctl: {args_text}"));
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
        TxnStatus::Error(e) => return Err(Flow::Error(format!("transaction error: {e}"))),
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
    Ok(Attempt::Done { outputs, wait_for })
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
