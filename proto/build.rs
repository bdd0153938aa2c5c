//! Records what this build is made from, for `--version`, the startup log,
//! `/metrics` and the agents' Hello: the git commit and its date, the
//! compiler, the target and the profile.
//!
//! The commit comes from `VANTAGE_BUILD_COMMIT` (and `VANTAGE_BUILD_DATE`)
//! when set — a container build has no `.git` — and otherwise from `git`
//! run in the source tree; without either it is `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn env(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Makes cargo run this script again when HEAD moves: HEAD itself (branch
/// switches), the ref it points to (commits) and packed-refs.
fn watch_git() {
    let Some(head) = git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]) else {
        return;
    };
    println!("cargo:rerun-if-changed={head}");
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            &reference,
        ]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(packed) = git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "packed-refs",
    ]) {
        if PathBuf::from(&packed).exists() {
            println!("cargo:rerun-if-changed={packed}");
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (commit, date) = match env("VANTAGE_BUILD_COMMIT") {
        Some(commit) => (commit, env("VANTAGE_BUILD_DATE")),
        None => {
            watch_git();
            (
                git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
                git(&["log", "-1", "--format=%cs", "HEAD"]),
            )
        }
    };
    let rustc = env("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let keep = |s: String| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
            .take(40)
            .collect()
    };
    println!("cargo:rustc-env=VANTAGE_BUILD_COMMIT={}", keep(commit));
    println!(
        "cargo:rustc-env=VANTAGE_BUILD_DATE={}",
        keep(date.unwrap_or_else(|| "unknown".into()))
    );
    println!(
        "cargo:rustc-env=VANTAGE_BUILD_RUSTC={}",
        keep(rustc_version)
    );
    println!(
        "cargo:rustc-env=VANTAGE_BUILD_TARGET={}",
        keep(env("TARGET").unwrap_or_default())
    );
    println!(
        "cargo:rustc-env=VANTAGE_BUILD_PROFILE={}",
        keep(env("PROFILE").unwrap_or_default())
    );
}
