//! Which `relay` binary the trees run: the one this workspace builds for
//! this program's profile, brought up to date by cargo.

use std::io::{BufReader, Read};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Finds the `relay` binary of this workspace, built for the profile this
/// program was (`target/release/relay` beside `target/release/relay-bench`).
///
/// `RELAY_BIN=PATH` names one explicitly. Otherwise cargo is asked to
/// bring it up to date (a no-op second when it is: without this, a
/// changed `crates/relay` would be measured with the old binary, since
/// building relay-bench builds the relay library but not its binary);
/// without cargo, the binary already beside this program is used.
pub fn relay_binary() -> Result<PathBuf, String> {
    if let Some(path) = explicit_relay_binary() {
        return path;
    }
    let (exe, dir) = profile_dir()?;
    let dir = dir.as_path();
    let beside = dir.join("relay");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => "release".to_string(),
    };
    let command = format!("cargo build --profile {profile} -p relay --bin relay");
    match build_relay(&profile, dir.parent()) {
        Ok(built) => Ok(built),
        Err(e) if beside.is_file() => {
            tracing::warn!(error = %e, binary = %beside.display(), "cannot rebuild relay; using the binary already there");
            Ok(beside)
        }
        Err(e) => Err(format!(
            "no relay binary beside {} and `{command}` failed: {e}; run `{command}` (or set RELAY_BIN)",
            exe.display()
        )),
    }
}

/// `RELAY_BIN`, if set.
fn explicit_relay_binary() -> Option<Result<PathBuf, String>> {
    let path = PathBuf::from(std::env::var_os("RELAY_BIN")?);
    Some(if path.is_file() {
        Ok(path)
    } else {
        Err(format!("RELAY_BIN={} is not a file", path.display()))
    })
}

/// This program and the target directory of its profile
/// (`target/PROFILE/relay-bench`, or `target/PROFILE/deps/TEST` for a test).
fn profile_dir() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut dir = exe.parent().ok_or("this program has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().ok_or("deps/ has no parent")?;
    }
    let dir = dir.to_path_buf();
    Ok((exe, dir))
}

/// A `relay` binary that is already built, without running cargo:
/// `RELAY_BIN`, the one beside this program, or the release one of the
/// same target directory. For the tests, which should not wait minutes
/// for a build (`cargo test --workspace` builds `target/debug/relay`).
pub fn built_relay_binary() -> Result<PathBuf, String> {
    if let Some(path) = explicit_relay_binary() {
        return path;
    }
    let (_, dir) = profile_dir()?;
    let candidates = [dir.join("relay"), dir.with_file_name("release").join("relay")];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "no relay binary at {}; build it with `cargo build -p relay --bin relay` (or set RELAY_BIN)",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    })
}

/// `cargo build --profile PROFILE -p relay --bin relay` in this workspace,
/// into `target_dir`; returns the executable cargo reports.
fn build_relay(profile: &str, target_dir: Option<&FsPath>) -> Result<PathBuf, String> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // What cargo sets for the program it runs (`cargo run`, `cargo test`)
    // describes relay-bench, not the build asked for here, and ring's
    // build script reruns when CARGO_MANIFEST_DIR changes: inherited, it
    // made every such build recompile ring and everything above it
    // (about 90 s here), and the next plain build recompile it back.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
        .current_dir(&workspace)
        .args(["build", "--profile", profile, "-p", "relay", "--bin", "relay"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    // A cold release build of the relay takes minutes on 2 cores.
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cargo build took over 20 minutes".into());
            }
            Err(e) => return Err(format!("cannot wait for cargo: {e}")),
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        let tail: String = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!("cargo build exited with {status}: {tail}"));
    }
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "relay")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built no relay executable".into())
}

/// Whether `binary` has chains (`relay answer --forward`).
pub fn has_forward(binary: &FsPath) -> bool {
    Command::new(binary)
        .args(["answer", "--help"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--forward"))
}
