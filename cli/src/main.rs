//! `oxvs`: one binary, many tools. `oxvs dpctl ...`, or the binary run through a
//! link named `ovs-dpctl`, is the datapath tool; `oxvs ovsdb-tool ...` (or a
//! link named `ovsdb-tool`) the offline database tool. The vsctl, ofctl and
//! appctl tools arrive with their issues; until then they say so and fail.
mod dpctl;
mod ovsdb_tool;
mod table;
mod vsctl;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like the C tools: `oxvs dpctl dump-flows | head` ends quietly.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let (tool, prog, rest) = match argv0.as_str() {
        "ovs-dpctl" => ("dpctl", "ovs-dpctl".to_string(), args.split_off(1)),
        "ovsdb-tool" => ("ovsdb-tool", "ovsdb-tool".to_string(), args.split_off(1)),
        "ovs-vsctl" => ("vsctl", "ovs-vsctl".to_string(), args.split_off(1)),
        _ => {
            if args.len() < 2 {
                eprintln!("usage: oxvs TOOL [ARGS...]\ntools: dpctl, ovsdb-tool, vsctl");
                return ExitCode::from(1);
            }
            let tool = args[1].clone();
            let rest = args.split_off(2);
            let t: &'static str = match tool.as_str() {
                "dpctl" => "dpctl",
                "ovsdb-tool" => "ovsdb-tool",
                "vsctl" => "vsctl",
                "-h" | "--help" | "help" => {
                    println!("usage: oxvs TOOL [ARGS...]\ntools: dpctl, ovsdb-tool, vsctl (see `oxvs TOOL --help`)");
                    return ExitCode::SUCCESS;
                }
                other => {
                    eprintln!("oxvs: unknown tool \"{other}\" (available: dpctl, ovsdb-tool, vsctl)");
                    return ExitCode::from(1);
                }
            };
            (t, format!("oxvs {tool}"), rest)
        }
    };
    match tool {
        "dpctl" => dpctl::main(&prog, rest),
        "ovsdb-tool" => ovsdb_tool::main(&prog, rest),
        "vsctl" => vsctl::main(&prog, rest),
        _ => unreachable!(),
    }
}
