//! The Debian package (SPEC 11) as an operator gets it. It is built with cargo-deb from the
//! binary these tests already built (no second, release build of the workspace: `--no-build`
//! over a target directory of its own holding that binary where the `dist` profile's would be,
//! stripped by cargo-deb), its contents and unit are checked (`dpkg-deb`, `systemd-analyze
//! verify`), and it is installed with `dpkg -i` into a scratch root (`dpkg --root`: the
//! maintainer scripts run with `DPKG_ROOT`, so its user and directories are made in that root
//! and the machine is left alone). Then the INSTALLED binary runs as the package's user with
//! the INSTALLED config (ports and data directory given as flags, which beat the file), takes
//! a SIGHUP as `systemctl reload` sends it, and a match replayed into it is cut by SIGTERM as
//! `systemctl restart` would: the node stops well within the unit's stop timeout, starts
//! again, the replay finishes, and every acknowledged event is in the history once. The second
//! run is traced: every system call is one the unit's filter allows, every socket one of its
//! address families, every write in the data directory (the unit makes the rest read-only).
//! Needs root (CI runs as root), cargo-deb (scripts/test installs it into target/tools),
//! dpkg-dev, systemd and strace.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use matchstream_client::Watcher;
use serde_json::Value;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const MATCH: &str = "elp-tig-2011-09-10";
const UNIT: &str = "/usr/lib/systemd/system/matchstream.service";
const CONFIG: &str = "/etc/matchstream/matchstream.toml";
const DATA: &str = "/var/lib/matchstream";

/// Runs `command`, which must succeed; its stdout.
fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?}: {}\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// cargo-deb from target/tools (where scripts/test and scripts/package install it), or PATH.
fn cargo_deb() -> PathBuf {
    let local = Path::new(REPO).join("target/tools/bin/cargo-deb");
    if local.exists() {
        return local;
    }
    let on_path = Command::new("cargo-deb").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("cargo-deb");
    }
    panic!(
        "cargo-deb is missing: scripts/test installs it, or run \
         `cargo install cargo-deb --locked --root target/tools`"
    );
}

/// The .deb of the binary under test, built in `work`.
fn build_package(work: &Path) -> PathBuf {
    let target = work.join("target");
    std::fs::create_dir_all(target.join("dist")).unwrap();
    std::fs::copy(BIN, target.join("dist/matchstream")).expect("copy the binary");
    let started = Instant::now();
    let stdout = run(Command::new(cargo_deb())
        .current_dir(REPO)
        .env("CARGO_TARGET_DIR", &target)
        .args(["--no-build", "--strip", "--fast", "--quiet", "--output"])
        .arg(work.join("deb")));
    eprintln!("cargo deb (stripping the test binary): {:?}", started.elapsed());
    PathBuf::from(stdout.lines().last().expect("cargo deb prints the path").trim())
}

fn check_contents(deb: &Path) {
    let control = run(Command::new("dpkg-deb").arg("-f").arg(deb));
    assert!(control.contains("Package: matchstream\n"), "{control}");
    let depends = control.lines().find(|l| l.starts_with("Depends:")).unwrap_or_default();
    for needed in ["libc6", "systemd", "procps"] {
        assert!(depends.contains(needed), "{needed} not in {control}");
    }
    let conffiles = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), CONFIG);
    let postinst = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("postinst"));
    assert!(postinst.contains("systemd-sysusers ${DPKG_ROOT:+"), "{postinst}");
    assert!(postinst.contains("systemd-tmpfiles ${DPKG_ROOT:+"), "{postinst}");
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    for (mode, path) in [
        ("-rwxr-xr-x", "/usr/bin/matchstream"),
        ("-rw-r--r--", UNIT),
        ("-rw-r--r--", CONFIG),
        ("-rw-r--r--", "/usr/lib/sysusers.d/matchstream.conf"),
        ("-rw-r--r--", "/usr/lib/tmpfiles.d/matchstream.conf"),
        ("-rw-r--r--", "/usr/share/doc/matchstream/copyright"),
    ] {
        let entry = format!(".{path}");
        let found = listing.lines().any(|l| l.starts_with(mode) && l.ends_with(&entry));
        assert!(found, "no {mode} {path} in:\n{listing}");
    }
}

/// Installs `deb` with dpkg into `root`, a new scratch root with an empty dpkg database.
fn install(deb: &Path, root: &Path) {
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "bin"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // What every Debian machine has and the unit runs (ExecReload): procps' kill.
    std::fs::copy("/bin/kill", root.join("bin/kill")).expect("/bin/kill (procps)");
    let passwd_before = std::fs::read("/etc/passwd").unwrap_or_default();
    // The scripts run outside a chroot with DPKG_ROOT set (`--force-script-chrootless`), with
    // this machine's systemd-sysusers and systemd-tmpfiles; the scratch database has no libc6
    // nor systemd, which this machine provides (`--force-depends`).
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args(["--force-script-chrootless", "--force-depends", "-i"])
        .arg(deb));
    let passwd_after = std::fs::read("/etc/passwd").unwrap_or_default();
    assert!(passwd_before == passwd_after, "the machine's /etc/passwd changed");
}

/// The package's user in the scratch root: (uid, gid).
fn package_user(root: &Path) -> (u32, u32) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("the root's passwd");
    let entry = passwd.lines().find(|l| l.starts_with("matchstream:"));
    let fields: Vec<&str> =
        entry.unwrap_or_else(|| panic!("no user:\n{passwd}")).split(':').collect();
    assert_eq!(fields[5], DATA, "{fields:?}");
    assert!(fields[6].ends_with("nologin"), "{fields:?}");
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// `Key=value` lines of the installed unit, in order.
fn unit_settings(root: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root.join(UNIT.trim_start_matches('/'))).unwrap();
    let settings = text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('['));
    let pairs = settings.filter_map(|l| l.split_once('='));
    pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn check_unit(root: &Path) -> Duration {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .arg(format!("--root={}", root.display()))
        .arg(UNIT)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd: apt-get install -y systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    let settings = unit_settings(root);
    let get = |key: &str| {
        let found = settings.iter().find(|(k, _)| k == key);
        found.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    assert_eq!(get("ExecStart"), format!("/usr/bin/matchstream serve --config {CONFIG}"));
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("User"), "matchstream");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("LimitNOFILE"), "1048576");
    assert_eq!(get("KillSignal"), "SIGTERM");
    assert_eq!(get("NoNewPrivileges"), "yes");
    assert_eq!(get("ProtectSystem"), "strict");
    assert_eq!(get("ReadWritePaths"), DATA);
    matchstream::config::parse_duration(get("TimeoutStopSec")).expect("TimeoutStopSec")
}

/// `drain_window` plus `shutdown_grace`, as the installed binary reads the installed config
/// (`--print-config`): what a stop may take before the node exits on its own.
fn drain_and_grace(root: &Path) -> Duration {
    let printed = run(Command::new(root.join("usr/bin/matchstream"))
        .args(["serve", "--print-config", "--config"])
        .arg(root.join(CONFIG.trim_start_matches('/')))
        .env_clear());
    let value = |key: &str| {
        let line = printed.lines().find_map(|l| l.strip_prefix(&format!("{key} = ")));
        let text = line.unwrap_or_else(|| panic!("no {key} in:\n{printed}")).trim_matches('"');
        matchstream::config::parse_duration(text).expect(key)
    };
    value("drain_window") + value("shutdown_grace")
}

/// A node of the installed package, as its user, and the JSON lines of its stderr.
struct Installed {
    child: Child,
    lines: mpsc::Receiver<String>,
    base: String,
}

/// Starts the installed binary with the installed config on `http` (`127.0.0.1:0`, or the port
/// of the run before); under `strace -f` into `trace` if given. `Err` with its log if it exits
/// before it is ready (the port of the run before may be taken for a moment).
fn start(
    root: &Path,
    (uid, gid): (u32, u32),
    http: &str,
    trace: Option<&Path>,
) -> Result<Installed, String> {
    let bin = root.join("usr/bin/matchstream");
    let mut command = match trace {
        Some(file) => {
            let mut strace = Command::new("strace");
            strace.args(["-f", "-qq", "-e", "signal=none", "-o"]).arg(file).arg("--").arg(&bin);
            strace
        }
        None => Command::new(&bin),
    };
    let mut child = command
        .arg("serve")
        .arg("--config")
        .arg(root.join(CONFIG.trim_start_matches('/')))
        .args(["--http", http, "--viewers", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--data")
        .arg(root.join(DATA.trim_start_matches('/')))
        .args(["--log-format", "json"])
        // As systemd starts a service: a clean environment, the unit's user.
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("MATCHSTREAM_WATCHER_TOKEN", TOKEN)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the installed binary");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let Ok(line) = lines.recv_timeout(PATIENCE) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(log.join("\n"));
        };
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        log.push(line);
        if v["message"] == "http listener ready" {
            let base = format!("http://{}", v["addr"].as_str().expect("addr"));
            return Ok(Installed { child, lines, base });
        }
    }
}

impl Installed {
    /// The node's own pid: the child, or the child of `strace`.
    fn node_pid(&self, traced: bool) -> libc::pid_t {
        let pid = self.child.id();
        if !traced {
            return pid as libc::pid_t;
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        let first =
            children.expect("strace's children").split_whitespace().next().map(str::to_owned);
        first.expect("strace runs the node").parse().unwrap()
    }

    /// Sends SIGTERM as systemd does, and waits for a clean exit; how long it took.
    fn stop(mut self, traced: bool) -> Duration {
        let started = Instant::now();
        // SAFETY: a signal to a process this test started (or strace's child) and not reaped.
        unsafe { libc::kill(self.node_pid(traced), libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the node's exit: {status:?}");
        started.elapsed()
    }

    /// The next stderr line whose message starts with `prefix`.
    fn wait_for(&self, prefix: &str) -> Value {
        loop {
            let line = self.lines.recv_timeout(PATIENCE).expect("a log line in time");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["message"].as_str().is_some_and(|m| m.starts_with(prefix)) {
                return v;
            }
        }
    }
}

/// A replay's acknowledgement: `[i/n] kind -> seq S` on its stdout.
fn acknowledged(line: &str) -> Option<(u64, String)> {
    let (head, seq) = line.split_once(" -> seq ")?;
    let kind = head.split_whitespace().nth(1)?;
    Some((seq.trim().parse().ok()?, kind.to_owned()))
}

#[tokio::test]
async fn the_debian_package_installs_runs_and_keeps_every_event_across_a_restart() {
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let why = "it installs with dpkg and runs the node as the package's user";
    assert!(root_user, "the package test needs root (CI runs as root): {why}");
    let work = tempfile::tempdir().unwrap();
    // The package's user must reach the scratch root inside it.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = build_package(work.path());
    check_contents(&deb);
    let root = work.path().join("root");
    install(&deb, &root);
    let user = package_user(&root);
    let data = std::fs::metadata(root.join(DATA.trim_start_matches('/'))).unwrap();
    assert_eq!((data.uid(), data.gid(), data.mode() & 0o777), (user.0, user.1, 0o750));
    let config = std::fs::metadata(root.join(CONFIG.trim_start_matches('/'))).unwrap();
    assert_eq!((config.uid(), config.gid(), config.mode() & 0o777), (0, user.1, 0o640));
    let stop_timeout = check_unit(&root);
    let drain = drain_and_grace(&root);
    assert!(stop_timeout > drain, "TimeoutStopSec {stop_timeout:?} cuts a drain of {drain:?}");
    let stripped = std::fs::metadata(root.join("usr/bin/matchstream")).unwrap().len();
    assert!(stripped < std::fs::metadata(BIN).unwrap().len(), "the installed binary is stripped");

    // The installed binary, its user, its config.
    let node = start(&root, user, "127.0.0.1:0", None).expect("the installed node starts");
    let http = node.base.trim_start_matches("http://").to_owned();
    // `systemctl reload`: the node says what it did and carries on.
    // SAFETY: a signal to the node this test started and has not reaped.
    unsafe { libc::kill(node.node_pid(false), libc::SIGHUP) };
    node.wait_for("SIGHUP");
    let reader = Watcher::new(&node.base, "").unwrap();
    assert_eq!(reader.get("/readyz").await.unwrap().status, 200);

    // A replay, cut by a restart after its tenth acknowledged event.
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/matches/elp-tig-2011-09-10.config");
    let mut replay = Command::new(root.join("usr/bin/matchstream"))
        .args(["replay", file, "--server", &node.base, "--speed", "25"])
        .env("MATCHSTREAM_WATCHER_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the installed replay");
    let (tx, replay_lines) = mpsc::channel();
    let stdout = replay.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut acked = Vec::new();
    while acked.len() < 10 {
        let line = replay_lines.recv_timeout(PATIENCE).expect("the replay goes on");
        acked.extend(acknowledged(&line));
    }
    let took = node.stop(false);
    assert!(took < stop_timeout, "stopped in {took:?}, over the unit's {stop_timeout:?}");
    eprintln!("SIGTERM to exit: {took:?} (TimeoutStopSec {stop_timeout:?})");

    // Started again on the same port (the replay retries there), traced to its end.
    let trace = work.path().join("strace.txt");
    // strace runs as the package's user too (it starts the node).
    std::fs::write(&trace, "").unwrap();
    std::os::unix::fs::chown(&trace, Some(user.0), Some(user.1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        match start(&root, user, &http, Some(&trace)) {
            Ok(node) => break node,
            Err(log) if Instant::now() < deadline && log.contains("in use") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(log) => panic!("the installed node did not start again:\n{log}"),
        }
    };
    let replay = tokio::task::spawn_blocking(move || replay.wait()).await.unwrap().unwrap();
    assert!(replay.success(), "the replay: {replay:?}");
    for line in replay_lines.try_iter() {
        acked.extend(acknowledged(&line));
    }

    // Every acknowledged event, once, at its seq; the match as the file ends it.
    let history = reader.get(&format!("/1/match/{MATCH}/history?limit=2000")).await.unwrap();
    let history = history.json().as_array().cloned().expect("a history is a list");
    let seqs: Vec<u64> = history.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seqs 1..n once each");
    for (seq, kind) in &acked {
        let event = history.iter().find(|e| e["seq"] == *seq);
        assert_eq!(event.map(|e| &e["kind"]), Some(&Value::from(kind.as_str())), "seq {seq}");
    }
    let (last_seq, last) = acked.last().cloned().unwrap();
    assert_eq!((last_seq, last.as_str()), (seqs.len() as u64, "stop"), "the whole file");
    let state = reader.get(&format!("/1/match/{MATCH}")).await.unwrap().json();
    assert_eq!((&state["home-score"], &state["visit-score"]), (&Value::from(1), &Value::from(3)));

    let took = node.stop(true);
    assert!(took < stop_timeout, "stopped in {took:?}, over the unit's {stop_timeout:?}");
    check_trace(&std::fs::read_to_string(&trace).unwrap(), &unit_settings(&root), &root);
}

/// The system call sets of systemd (`systemd-analyze syscall-filter`): each `@group`'s calls,
/// with the groups it names expanded.
fn syscall_groups() -> std::collections::HashMap<String, BTreeSet<String>> {
    let text = run(Command::new("systemd-analyze").arg("syscall-filter"));
    let mut raw: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let item = line.trim();
        if line.starts_with('@') {
            raw.push((item.split_whitespace().next().unwrap().to_owned(), Vec::new()));
        } else if let Some((_, members)) = raw.last_mut().filter(|_| !item.is_empty()) {
            if !item.starts_with('#') {
                members.push(item.to_owned());
            }
        }
    }
    fn expand(name: &str, raw: &[(String, Vec<String>)], out: &mut BTreeSet<String>) {
        let members = raw.iter().find(|(g, _)| g == name).map(|(_, m)| m.as_slice());
        for member in members.unwrap_or_else(|| panic!("no syscall group {name}")) {
            match member.starts_with('@') {
                true => expand(member, raw, out),
                false => drop(out.insert(member.clone())),
            }
        }
    }
    let mut groups = std::collections::HashMap::new();
    for (name, _) in &raw {
        let mut calls = BTreeSet::new();
        expand(name, &raw, &mut calls);
        groups.insert(name.clone(), calls);
    }
    groups
}

/// The name of the system call an `strace -f` line shows (`pid name(...`, `pid <... name resumed>`).
fn syscall_name(line: &str) -> Option<&str> {
    let rest = line.split_once(' ')?.1.trim_start();
    let name = match rest.strip_prefix("<... ") {
        Some(resumed) => resumed.split_whitespace().next()?,
        None => rest.split('(').next()?,
    };
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain.then_some(name)
}

/// What the node did under strace, against the unit's sandbox: its system calls allowed by
/// SystemCallFilter=, its sockets of RestrictAddressFamilies=, its writes under the data
/// directory (ProtectSystem=strict leaves only ReadWritePaths= writable).
fn check_trace(trace: &str, unit: &[(String, String)], root: &Path) {
    let groups = syscall_groups();
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for (_, filter) in unit.iter().filter(|(k, _)| k == "SystemCallFilter") {
        let (set, list) = match filter.strip_prefix('~') {
            Some(list) => (&mut denied, list),
            None => (&mut allowed, filter.as_str()),
        };
        for item in list.split_whitespace() {
            match groups.get(item) {
                Some(calls) => set.extend(calls.iter().cloned()),
                None => drop(set.insert(item.to_owned())),
            }
        }
    }
    assert!(!allowed.is_empty(), "the unit has a SystemCallFilter allow list");
    let used: BTreeSet<&str> = trace.lines().filter_map(syscall_name).collect();
    assert!(used.contains("epoll_wait") && used.contains("fsync"), "a whole trace: {used:?}");
    let refused: Vec<&&str> =
        used.iter().filter(|c| !allowed.contains(**c) || denied.contains(**c)).collect();
    assert!(refused.is_empty(), "system calls the unit's filter refuses: {refused:?}");

    let families = unit.iter().find(|(k, _)| k == "RestrictAddressFamilies").expect("families");
    let data = root.join(DATA.trim_start_matches('/'));
    for line in trace.lines() {
        let Some(name) = syscall_name(line) else { continue };
        let args = line.split_once('(').map_or("", |(_, a)| a);
        // A call split by another thread's is checked at its start, where its arguments are.
        if line.contains("resumed>") {
            continue;
        }
        if name == "socket" || name == "socketpair" {
            let family = args.split(',').next().unwrap_or_default();
            assert!(families.1.split_whitespace().any(|f| f == family), "{line}");
        }
        let writes = match name {
            "openat" | "open" => ["O_WRONLY", "O_RDWR", "O_CREAT"].iter().any(|f| args.contains(f)),
            _ => ["mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat", "renameat2"]
                .contains(&name),
        };
        let path = args.split('"').nth(1).unwrap_or_default();
        if writes && !path.is_empty() {
            assert!(Path::new(path).starts_with(&data), "a write outside {DATA}: {line}");
        }
    }
}
