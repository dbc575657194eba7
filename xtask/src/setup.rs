//! `cargo xtask setup`: everything a fresh machine needs, idempotent and quiet
//! when already done.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::run;

/// Debian packages the build, tests, demo and benchmarks use: the reference
/// Open vSwitch, iproute2 (ip, tc), ethtool (GRO on veth peers), util-linux
/// (nsenter), ping, bpftool, tcpdump for debugging; OpenSSL's headers and
/// pkg-config for the IDL's `ssl:` remotes (the openssl crate).
const PACKAGES: &[&str] = &[
    "libssl-dev",
    "pkg-config",
    "openvswitch-switch",
    "openvswitch-common",
    "iproute2",
    "ethtool",
    "util-linux",
    "bpftool",
    "tcpdump",
    "iputils-ping",
];

fn output(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let s = output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .context("no nightly toolchain (rustup run nightly rustc failed)")?;
    Ok(PathBuf::from(s))
}

fn rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker 0.13 linked against the nightly's own libLLVM (there is no
/// prebuilt binary and no Debian LLVM of that version).
fn bpf_linker() -> Result<()> {
    if output(Command::new("bpf-linker").arg("--version")).is_some() {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let libdir = sysroot.join("lib");
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"])).context("rustc -vV")?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc reports no LLVM version")?
        .to_string();
    let prefix = format!("libLLVM-{major}-");
    let lib = std::fs::read_dir(&libdir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&prefix) && n.ends_with(".so"))
        .with_context(|| format!("no {prefix}*.so in {}", libdir.display()))?;
    let lib = lib.trim_start_matches("lib").trim_end_matches(".so").to_string();
    eprintln!("setup: building bpf-linker against the nightly's LLVM {major} ({lib})");
    let flags = format!("-L native={d} -l dylib={lib} -C link-arg=-Wl,-rpath,{d}", d = libdir.display());
    let mut c = Command::new("cargo");
    c.env("RUSTFLAGS", flags).args([
        "install",
        "bpf-linker",
        "--version",
        "=0.13.0",
        "--locked",
        "--no-default-features",
        "--features",
        &format!("llvm-{major},no-llvm-linking"),
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k.starts_with("RUSTUP_TOOLCHAIN") {
            c.env_remove(k);
        }
    }
    run(&mut c)?;
    if output(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!("bpf-linker was installed but does not run (is ~/.cargo/bin on PATH?)");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.ends_with("install ok installed"))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

pub fn setup() -> Result<()> {
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    Ok(())
}
