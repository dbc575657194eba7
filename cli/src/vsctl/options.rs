//! Command-line parsing the way ovs-vsctl does it: getopt_long-style global
//! options (long names may be abbreviated to a unique prefix) up to the first
//! non-option word, then commands separated by `--`, each with its own
//! `--option[=value]` words before the command name. Options that belong to
//! commands may also appear among the global options; they then apply to the
//! first command.
use std::collections::BTreeMap;

use crate::table::TableStyle;

use super::commands::{CommandSyntax, find_command};

/// Whether a long option takes an argument.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HasArg {
    No,
    Required,
    Optional,
}

/// Global long options (ovs-vsctl's `global_long_options` plus the vlog,
/// table and SSL option sets) with their short letters.
const GLOBAL_OPTIONS: &[(&str, HasArg, Option<char>)] = &[
    ("db", HasArg::Required, None),
    ("no-syslog", HasArg::No, None),
    ("no-wait", HasArg::No, None),
    ("dry-run", HasArg::No, None),
    ("oneline", HasArg::No, None),
    ("timeout", HasArg::Required, Some('t')),
    ("retry", HasArg::No, None),
    ("help", HasArg::No, Some('h')),
    ("commands", HasArg::No, None),
    ("options", HasArg::No, None),
    ("leader-only", HasArg::No, None),
    ("no-leader-only", HasArg::No, None),
    ("shuffle-remotes", HasArg::No, None),
    ("no-shuffle-remotes", HasArg::No, None),
    ("version", HasArg::No, Some('V')),
    ("verbose", HasArg::Optional, Some('v')),
    ("log-file", HasArg::Optional, None),
    ("syslog-method", HasArg::Required, None),
    ("syslog-target", HasArg::Required, None),
    ("format", HasArg::Required, Some('f')),
    ("data", HasArg::Required, Some('d')),
    ("no-headings", HasArg::No, None),
    ("pretty", HasArg::No, None),
    ("bare", HasArg::No, None),
    ("max-column-width", HasArg::Required, None),
    ("private-key", HasArg::Required, Some('p')),
    ("certificate", HasArg::Required, Some('c')),
    ("ca-cert", HasArg::Required, Some('C')),
    ("ssl-protocols", HasArg::Required, None),
    ("ssl-ciphers", HasArg::Required, None),
    ("bootstrap-ca-cert", HasArg::Required, None),
    ("peer-ca-cert", HasArg::Required, None),
];

/// Per-command options (from the commands' option strings), accepted among
/// the global options too.
const LOCAL_OPTIONS: &[(&str, HasArg)] = &[
    ("if-exists", HasArg::No),
    ("id", HasArg::Required),
    ("columns", HasArg::Required),
    ("all", HasArg::No),
    ("may-exist", HasArg::No),
    ("real", HasArg::No),
    ("fake", HasArg::No),
    ("with-iface", HasArg::No),
    ("fake-iface", HasArg::No),
    ("inactivity-probe", HasArg::Required),
    ("bootstrap", HasArg::No),
];

/// What the global options asked for.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    pub db: Option<String>,
    pub wait_for_reload: bool,
    pub dry_run: bool,
    pub oneline: bool,
    pub timeout: Option<u32>,
    pub retry: bool,
    pub style: TableStyle,
    /// For `ssl:` remotes.
    pub ssl: oxvs_ovsdb::idl::SslOptions,
}

/// The first thing to do: run commands, or print something and exit.
#[derive(Debug)]
pub enum Action {
    Run(GlobalOptions, Vec<ParsedCommand>),
    Help,
    Version,
    PrintCommands,
    PrintOptions,
}

/// One command: its options (`--name` -> value) and its words (name first).
#[derive(Debug, Clone)]
pub struct ParsedCommand {
    pub syntax: &'static CommandSyntax,
    pub options: BTreeMap<String, Option<String>>,
    pub argv: Vec<String>,
}

impl ParsedCommand {
    #[cfg(test)]
    pub fn has(&self, option: &str) -> bool {
        self.options.contains_key(option)
    }
    pub fn value(&self, option: &str) -> Option<&str> {
        self.options.get(option).and_then(|v| v.as_deref())
    }
}

enum LongMatch {
    Global(usize),
    Local(usize),
}

fn long_name(m: &LongMatch) -> (&'static str, HasArg) {
    match *m {
        LongMatch::Global(i) => (GLOBAL_OPTIONS[i].0, GLOBAL_OPTIONS[i].1),
        LongMatch::Local(i) => LOCAL_OPTIONS[i],
    }
}

/// getopt_long's lookup: an exact name wins, else a unique prefix.
fn lookup_long(name: &str, word: &str) -> Result<LongMatch, String> {
    let all = GLOBAL_OPTIONS
        .iter()
        .enumerate()
        .map(|(i, o)| (o.0, LongMatch::Global(i)))
        .chain(LOCAL_OPTIONS.iter().enumerate().map(|(i, o)| (o.0, LongMatch::Local(i))));
    let mut candidates = Vec::new();
    for (n, m) in all {
        if n == name {
            return Ok(m);
        }
        if n.starts_with(name) {
            candidates.push((n, m));
        }
    }
    match candidates.len() {
        0 => Err(format!("unrecognized option '{word}'")),
        1 => Ok(candidates.pop().expect("one candidate").1),
        _ => {
            let names: Vec<String> = candidates.iter().map(|(n, _)| format!("'--{n}'")).collect();
            Err(format!("option '--{name}' is ambiguous; possibilities: {}", names.join(" ")))
        }
    }
}

fn apply_global(
    g: &mut GlobalOptions,
    name: &str,
    value: Option<String>,
    action: &mut Option<Action>,
) -> Result<(), String> {
    match name {
        "db" => g.db = value,
        "no-wait" => g.wait_for_reload = false,
        "dry-run" => g.dry_run = true,
        "oneline" => g.oneline = true,
        "retry" => g.retry = true,
        "timeout" => {
            let v = value.unwrap_or_default();
            match v.parse::<u32>() {
                Ok(n) if n > 0 && !v.starts_with('+') => g.timeout = Some(n),
                _ => return Err(format!("value {v} on -t or --timeout is invalid")),
            }
        }
        "help" => *action = action.take().or(Some(Action::Help)),
        "version" => *action = action.take().or(Some(Action::Version)),
        "commands" => *action = action.take().or(Some(Action::PrintCommands)),
        "options" => *action = action.take().or(Some(Action::PrintOptions)),
        "format" | "data" | "no-headings" | "pretty" | "bare" | "max-column-width" => {
            g.style.apply_option(name, value.as_deref())?;
        }
        "private-key" => g.ssl.private_key = value.map(Into::into),
        "certificate" => g.ssl.certificate = value.map(Into::into),
        "ca-cert" => {
            g.ssl.ca_cert = value.map(Into::into);
            g.ssl.bootstrap_ca_cert = false;
        }
        "bootstrap-ca-cert" => {
            g.ssl.ca_cert = value.map(Into::into);
            g.ssl.bootstrap_ca_cert = true;
        }
        "verbose" => super::vlog::set_verbosity(value.as_deref())
            .map_err(|e| format!("processing \"{}\": {e}", value.as_deref().unwrap_or_default()))?,
        // Other logging, clustering and SSL settings (protocols, ciphers,
        // peer CA certificate) have no effect on what this
        // implementation does (it logs nothing and connects to one remote).
        _ => {}
    }
    Ok(())
}

/// `--options`: the global options as ovs-vsctl lists them for bash
/// completion.
pub fn print_options() -> String {
    let mut out = String::new();
    for (name, has_arg, short) in GLOBAL_OPTIONS {
        let arg = *has_arg != HasArg::No;
        out += &format!("--{name}{}\n", if arg { "=ARG" } else { "" });
        if let Some(c) = short {
            out += &format!("-{c}{}\n", if arg { " ARG" } else { "" });
        }
    }
    out
}

/// Parses the whole command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<Action, String> {
    let mut g = GlobalOptions {
        db: None,
        wait_for_reload: true,
        dry_run: false,
        oneline: false,
        timeout: None,
        retry: false,
        style: TableStyle::default(),
        ssl: Default::default(),
    };
    let mut action = None;
    let mut local: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        if word == "--" {
            i += 1;
            break;
        }
        if let Some(body) = word.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let m = lookup_long(name, word)?;
            let (full, has_arg) = long_name(&m);
            let value = match has_arg {
                HasArg::No => {
                    if inline.is_some() {
                        return Err(format!("option '--{full}' doesn't allow an argument"));
                    }
                    None
                }
                HasArg::Optional => inline,
                HasArg::Required => match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => Some(v.clone()),
                            None => return Err(format!("option '--{full}' requires an argument")),
                        }
                    }
                },
            };
            match m {
                LongMatch::Global(_) => apply_global(&mut g, full, value, &mut action)?,
                // ovs-vsctl does not refuse a repeated option here.
                LongMatch::Local(_) => {
                    local.insert(format!("--{full}"), value);
                }
            }
            i += 1;
        } else if word.len() > 1 && word.starts_with('-') {
            // A cluster of short options, e.g. "-v", "-t5", "-fjson".
            let chars: Vec<char> = word[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                let Some(opt) = GLOBAL_OPTIONS.iter().find(|o| o.2 == Some(c)) else {
                    return Err(format!("invalid option -- '{c}'"));
                };
                let rest: String = chars[j + 1..].iter().collect();
                let value = match opt.1 {
                    HasArg::No => None,
                    HasArg::Optional => {
                        j = chars.len();
                        (!rest.is_empty()).then_some(rest)
                    }
                    HasArg::Required => {
                        j = chars.len();
                        if !rest.is_empty() {
                            Some(rest)
                        } else {
                            i += 1;
                            match args.get(i) {
                                Some(v) => Some(v.clone()),
                                None => return Err(format!("option requires an argument -- '{c}'")),
                            }
                        }
                    }
                };
                apply_global(&mut g, opt.0, value, &mut action)?;
                j += 1;
            }
            i += 1;
        } else {
            break;
        }
    }
    if let Some(a) = action {
        return Ok(a);
    }
    let commands = parse_commands(&args[i..], local)?;
    Ok(Action::Run(g, commands))
}

/// Splits the words after the global options at each `--` and parses each
/// piece as one command (ovs-vsctl's `ctl_parse_commands`).
fn parse_commands(args: &[String], mut local: BTreeMap<String, Option<String>>) -> Result<Vec<ParsedCommand>, String> {
    let mut commands = Vec::new();
    let mut start = 0;
    for i in 0..=args.len() {
        if i == args.len() || args[i] == "--" {
            if i > start {
                commands.push(parse_command(&args[start..i], std::mem::take(&mut local))?);
            } else if !local.is_empty() {
                return Err("missing command name (use --help for help)".into());
            }
            start = i + 1;
        }
    }
    if commands.is_empty() {
        return Err("missing command name (use --help for help)".into());
    }
    Ok(commands)
}

fn parse_command(words: &[String], mut options: BTreeMap<String, Option<String>>) -> Result<ParsedCommand, String> {
    let mut i = 0;
    while i < words.len() && words[i].starts_with('-') {
        let (key, value) = match words[i].split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (words[i].clone(), None),
        };
        if options.contains_key(&key) {
            return Err(format!("'{}' option specified multiple times", words[i]));
        }
        options.insert(key, value);
        i += 1;
    }
    if i == words.len() {
        return Err("missing command name (use --help for help)".into());
    }
    let name = &words[i];
    let syntax = find_command(name).ok_or_else(|| format!("unknown command '{name}'; use --help for help"))?;
    for (opt, value) in &options {
        // Same test as OVS: the option must appear in the command's option
        // string followed by '=', ',', '?', or the end.
        let end = syntax.options.find(opt.as_str()).map(|p| syntax.options[p + opt.len()..].chars().next());
        let end = match end {
            None => return Err(format!("'{name}' command has no '{opt}' option")),
            Some(e) => e,
        };
        if !matches!(end, None | Some('=') | Some(',') | Some('?') | Some(' ')) {
            return Err(format!("'{name}' command has no '{opt}' option"));
        }
        if end != Some('?') && (end == Some('=')) != value.is_some() {
            return Err(if end == Some('=') {
                format!("missing argument to '{opt}' option on '{name}' command")
            } else {
                format!("'{opt}' option on '{name}' does not accept an argument")
            });
        }
    }
    let n_arg = words.len() - i - 1;
    if n_arg < syntax.min_args {
        return Err(format!("'{}' command requires at least {} arguments", syntax.name, syntax.min_args));
    }
    if n_arg > syntax.max_args {
        if words[i + 1..].iter().any(|w| w.starts_with('-')) {
            return Err(format!(
                "'{}' command takes at most {} arguments (note that options must precede command names and follow a \"--\" argument)",
                syntax.name, syntax.max_args
            ));
        }
        return Err(format!("'{}' command takes at most {} arguments", syntax.name, syntax.max_args));
    }
    Ok(ParsedCommand { syntax, options, argv: words[i..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Action, String> {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_args(&args)
    }

    fn run(s: &str) -> (GlobalOptions, Vec<ParsedCommand>) {
        match parse(s) {
            Ok(Action::Run(g, c)) => (g, c),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn global_options_and_chained_commands() {
        let (g, c) = run("--no-wait --db=unix:/x -t 5 --oneline add-br br0 -- --may-exist add-port br0 p1");
        assert!(!g.wait_for_reload && g.oneline);
        assert_eq!(g.db.as_deref(), Some("unix:/x"));
        assert_eq!(g.timeout, Some(5));
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].argv, ["add-port", "br0", "p1"]);
        assert!(c[1].has("--may-exist"));
    }

    #[test]
    fn abbreviations_and_local_options_before_the_first_command() {
        let (g, c) = run("--no-w --if-exists del-br br0");
        assert!(!g.wait_for_reload);
        assert!(c[0].has("--if-exists"));
        let (_, c) = run("--columns=name list Bridge");
        assert_eq!(c[0].value("--columns"), Some("name"));
    }

    #[test]
    fn errors_use_ovs_wording() {
        let e = |s| parse(s).unwrap_err();
        assert_eq!(e("--foo list-br"), "unrecognized option '--foo'");
        assert_eq!(e("-x list-br"), "invalid option -- 'x'");
        assert!(e("--no list-br").starts_with("option '--no' is ambiguous; possibilities: '--no-syslog' '--no-wait'"));
        assert_eq!(e("-t 0 list-br"), "value 0 on -t or --timeout is invalid");
        assert_eq!(e("foo"), "unknown command 'foo'; use --help for help");
        assert_eq!(e(""), "missing command name (use --help for help)");
        assert_eq!(e("add-br"), "'add-br' command requires at least 1 arguments");
        assert_eq!(e("list-br x"), "'list-br' command takes at most 0 arguments");
        assert_eq!(e("--if-exists list-br"), "'list-br' command has no '--if-exists' option");
        assert_eq!(e("-- --id list Bridge"), "'list' command has no '--id' option");
        assert_eq!(e("-- --id get Bridge br0"), "missing argument to '--id' option on 'get' command");
        assert_eq!(e("-- --all=1 destroy Bridge"), "'--all' option on 'destroy' does not accept an argument");
        assert_eq!(e("-- --all --all destroy Bridge"), "'--all' option specified multiple times");
        assert_eq!(
            e("br-exists a -b"),
            "'br-exists' command takes at most 1 arguments (note that options must precede command names and follow a \"--\" argument)"
        );
    }
}
