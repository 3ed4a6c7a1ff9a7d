//! What a binary says it is (SPEC 11): `matchstream --version` names the version and the commit
//! it was built from, and a node's `/metrics` has `matchstream_build_info{version,commit} 1`
//! with the same two. The commit comes from crates/cli/build.rs, whose code is included here
//! and run on the trees a build may meet: a git checkout (a worktree, packed refs), a tarball
//! without `.git`, a tarball unpacked inside another repository, a packager's variable.

use std::path::Path;
use std::process::Command;

use crate::support::*;

// Its `main` is cargo's; the tests call `commit`.
#[allow(dead_code)]
#[path = "../../crates/cli/build.rs"]
mod build_script;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the build script found for this tree when it built the binary (a commit since would
/// make the binary stale until cargo builds it again, which its rerun-if-changed lines ensure).
fn built_commit() -> String {
    let from_env = option_env!("MATCHSTREAM_COMMIT").map(str::to_owned);
    build_script::commit(from_env, Path::new(env!("CARGO_MANIFEST_DIR"))).commit
}

#[tokio::test]
async fn version_and_build_info_name_the_commit_the_binary_was_built_from() {
    let commit = built_commit();
    if Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.git")).exists()
        && option_env!("MATCHSTREAM_COMMIT").is_none()
    {
        assert!(commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), format!("matchstream {VERSION} (commit {commit})"));

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path());
    let metrics = reqwest::get(format!("{}/metrics", node.admin)).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let series = format!("matchstream_build_info{{version=\"{VERSION}\",commit=\"{commit}\"}} 1");
    assert!(metrics.lines().any(|l| l == series), "no {series} in:\n{metrics}");
}

/// `git` in `dir`, which must succeed; its output, trimmed.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=MatchStream tests", "-c", "user.email=tests@matchstream.invalid"])
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_build_script_finds_the_commit_in_git_a_tarball_or_the_packagers_variable() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "first"]);
    let head = git(&repo, &["rev-parse", "--short=12", "HEAD"]);

    // A checkout: its HEAD, and the files a checkout or a commit rewrites.
    let found = build_script::commit(None, &repo);
    assert_eq!(found.commit, head);
    let watches =
        |found: &build_script::Found, tail: &str| found.watch.iter().any(|p| p.ends_with(tail));
    assert!(watches(&found, ".git/HEAD"), "{found:?}");
    assert!(watches(&found, ".git/refs/heads/main"), "{found:?}");

    // A packager's variable wins, and nothing needs watching.
    let found = build_script::commit(Some("0123456789ab\n".to_owned()), &repo);
    assert_eq!(found.commit, "0123456789ab");
    assert!(found.watch.is_empty());
    let found = build_script::commit(Some(" ".to_owned()), &repo);
    assert_eq!(found.commit, head, "a blank variable is no word");

    // After `git gc` the branch is in packed-refs; the next commit writes the loose file.
    git(&repo, &["pack-refs", "--all"]);
    let found = build_script::commit(None, &repo);
    assert_eq!(found.commit, head);
    assert!(watches(&found, ".git/packed-refs"), "{found:?}");
    assert!(watches(&found, ".git/refs/heads"), "{found:?}");

    // A worktree: its own HEAD, the common directory's branch.
    let worktree = root.path().join("wt");
    git(&repo, &["worktree", "add", "-q", "-b", "other", worktree.to_str().unwrap()]);
    git(&worktree, &["commit", "-q", "--allow-empty", "-m", "second"]);
    let found = build_script::commit(None, &worktree);
    assert_eq!(found.commit, git(&worktree, &["rev-parse", "--short=12", "HEAD"]));
    assert_ne!(found.commit, head);
    assert!(watches(&found, ".git/worktrees/wt/HEAD"), "{found:?}");
    assert!(watches(&found, ".git/refs/heads/other"), "{found:?}");

    // A tarball: no .git at all, or unpacked inside someone else's repository.
    let tarball = tempfile::tempdir().unwrap();
    assert_eq!(build_script::commit(None, tarball.path()).commit, "unknown");
    let inside = repo.join("matchstream-0.1.0");
    std::fs::create_dir(&inside).unwrap();
    let found = build_script::commit(None, &inside);
    assert_eq!(found.commit, "unknown", "the enclosing repository's commit is not ours");
}
