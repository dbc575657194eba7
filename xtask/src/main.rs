//! `cargo xtask setup | build-ebpf | test | demo | bench <name>`.
mod bench;
mod demo;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a command, failing with its name when it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// A cargo for the nightly toolchain, with the variables the outer (stable)
/// cargo set removed so they don't leak into the eBPF build.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME"
            || k.starts_with("RUSTUP_TOOLCHAIN")
            || k == "RUSTC"
            || k == "RUSTDOC"
            || k == "RUSTFLAGS"
            || k == "RUSTC_WRAPPER"
            || k == "RUSTC_WORKSPACE_WRAPPER"
        {
            c.env_remove(k);
        }
    }
    c
}

pub fn build_ebpf() -> Result<()> {
    let dir = root().join("datapath-ebpf");
    // Always an optimised build: unoptimised BPF is too big for the verifier.
    run(nightly_cargo().current_dir(&dir).args(["build", "--release", "--quiet"]))
        .context("building the eBPF datapath (is `cargo xtask setup` done?)")
}

fn test(extra: &[String]) -> Result<()> {
    setup::setup()?;
    build_ebpf()?;
    // The system tests run the `oxvs` binary: build it first.
    run(Command::new("cargo").current_dir(root()).args(["build", "--workspace", "--bins", "--quiet"]))?;
    let mut c = Command::new("cargo");
    c.current_dir(root()).args(["test", "--workspace"]).args(extra);
    run(&mut c)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = if args.len() > 1 { &args[1..] } else { &[] };
    match args.first().map(String::as_str) {
        Some("setup") => setup::setup(),
        Some("build-ebpf") => build_ebpf(),
        Some("test") => test(rest),
        Some("demo") => {
            setup::setup()?;
            build_ebpf()?;
            demo::demo()
        }
        Some("bench") => {
            setup::setup()?;
            build_ebpf()?;
            // The datapath object is embedded when xtask is compiled: run the
            // bench from a fresh cargo invocation so a rebuilt object is in it.
            run(Command::new("cargo")
                .current_dir(root())
                .args(["run", "--quiet", "--package", "xtask", "--", "bench-built"])
                .args(rest))
        }
        Some("bench-built") => bench::bench(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask COMMAND\n  setup              install what the build and tests need (idempotent)\n  build-ebpf [--release]  build the eBPF datapath (always optimised)\n  test [ARGS]        setup, build-ebpf, cargo test --workspace [ARGS]\n  demo               two namespaces joined by the XDP datapath\n  bench datapath     datapath benchmark against bare XDP and the Linux bridge\n                     ([--secs N] [--runs N]; --test-run-only: the program-cost part alone)\n  bench ovsdb        oxvsdb-server against ovsdb-server: throughput, one large transaction, monitor fan-out, memory\n  bench vsctl        oxvs vsctl against ovs-vsctl: add-port latency, 1000 ports in one invocation"
            );
            std::process::exit(2);
        }
    }
}
