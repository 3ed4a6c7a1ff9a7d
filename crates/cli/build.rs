//! The build script of the `matchstream` binary: the commit it is built from, for `--version`
//! and `matchstream_build_info` (SPEC 11), handed to the code as `MATCHSTREAM_BUILD_COMMIT`.
//! It comes from `MATCHSTREAM_COMMIT` when a packaging script sets it (a source tarball has no
//! `.git`), else from git, else it is `unknown`. The script runs again only when that variable,
//! HEAD or the branch HEAD points at changes, so that a build after a commit says the new
//! commit and a build without one does no extra work.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=MATCHSTREAM_COMMIT");
    // Without a rerun-if-changed line cargo would run the script again after any change to
    // any file of the package (here, the whole repository).
    println!("cargo::rerun-if-changed=crates/cli/build.rs");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let found = commit(std::env::var("MATCHSTREAM_COMMIT").ok(), &dir);
    for path in &found.watch {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!("cargo::rustc-env=MATCHSTREAM_BUILD_COMMIT={}", found.commit);
}

/// The commit of a source tree, and the files whose change means it may have moved.
#[derive(Debug)]
pub struct Found {
    pub commit: String,
    pub watch: Vec<PathBuf>,
}

/// The commit of the source tree at `dir`: `from_env` if set (the packager's word), else the
/// HEAD of the git repository whose top is `dir` (12 hex digits, as `git log --oneline` would
/// print), else `unknown`. A tarball unpacked inside another repository (a home directory kept
/// in git, a packaging repository) is not that repository's commit: `dir` must be the top.
pub fn commit(from_env: Option<String>, dir: &Path) -> Found {
    let unknown = || Found { commit: "unknown".to_owned(), watch: Vec::new() };
    if let Some(commit) = from_env.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()) {
        return Found { commit, watch: Vec::new() };
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
    if !top.is_some_and(|top| same(&top, dir)) {
        return unknown();
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else { return unknown() };
    // `--git-path` finds each file where git keeps it, in a worktree too (its own HEAD, the
    // common directory's refs). A commit rewrites the branch's file, a checkout rewrites HEAD.
    let path = |name: &str| git(&["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut watch: Vec<PathBuf> = path("HEAD").into_iter().collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        match path(&branch) {
            Some(loose) if loose.exists() => watch.push(loose),
            // A packed ref (after `git gc`): the next commit writes the loose file beside it.
            loose => {
                watch.extend(path("packed-refs"));
                watch.extend(loose.as_deref().and_then(Path::parent).map(Path::to_path_buf));
            }
        }
    }
    // cargo runs a script again on every build while a watched path is missing.
    watch.retain(|p| p.exists());
    Found { commit, watch }
}
