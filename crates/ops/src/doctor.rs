//! `matchstream doctor` (SPEC 9): reads this machine's limits ([`Machine::read`]) and says, for N
//! viewers, each limit that would stop a node holding them, each that would only slow it (a crowd
//! reconnecting at once), and the exact command that lifts it ([`examine`]). Reading and judging
//! are apart, so the judgement is tested on machines made up in the tests.
//!
//! The per-viewer figures are what BENCHMARKS.md measured, rounded up: the node keeps ~0.1 to
//! 0.7 KiB per idle viewer and the kernel ~2 to 3 KiB per TCP socket; a burst queues up to a page
//! of send buffer per viewer until the socket takes it.

use std::fmt::Write as _;

use serde::Serialize;

/// Descriptors a node keeps besides viewers (listeners, HTTP clients, the store); `serve` holds
/// back the same number.
pub const RESERVE_FDS: u64 = 512;
/// Memory per idle viewer, node and kernel together, rounded up.
pub const BYTES_PER_VIEWER: u64 = 4 * 1024;
/// TCP send buffer a viewer may hold during a burst: one page.
pub const BURST_BYTES_PER_VIEWER: u64 = 4 * 1024;
/// Part of RAM the viewers may take; the rest is for the node's matches, the store and the OS.
const RAM_SHARE: f64 = 0.8;

/// The limits that matter, as read off a machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    /// `RLIMIT_NOFILE` of this process (a node started from the same shell gets the same).
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    /// `fs.nr_open`: the highest a process's hard limit may be raised to.
    pub nr_open: u64,
    /// `fs.file-max`: open files for the whole system.
    pub file_max: u64,
    /// `net.core.somaxconn`: caps every listener's accept queue.
    pub somaxconn: u64,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections waiting for their handshake.
    pub syn_backlog: u64,
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: (u64, u64),
    /// `net.ipv4.tcp_mem` (min, pressure, max), in pages.
    pub tcp_mem: [u64; 3],
    pub page_size: u64,
    pub mem_total: u64,
    /// `net.netfilter.nf_conntrack_max`, when connection tracking is loaded.
    pub conntrack_max: Option<u64>,
}

/// Why the machine could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what}: {why}")]
pub struct ReadError {
    what: String,
    why: String,
}

impl Machine {
    /// Reads this machine (Linux: `/proc` and `getrlimit`).
    pub fn read() -> Result<Machine, ReadError> {
        let (nofile_soft, nofile_hard) = crate::limits::open_files()
            .map_err(|e| ReadError { what: "RLIMIT_NOFILE".into(), why: e.to_string() })?;
        let ports = numbers("/proc/sys/net/ipv4/ip_local_port_range")?;
        let tcp_mem = numbers("/proc/sys/net/ipv4/tcp_mem")?;
        let short = |path: &str| ReadError { what: path.into(), why: "too few numbers".into() };
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .ok_or_else(|| ReadError { what: "/proc/meminfo".into(), why: "no MemTotal".into() })?
            * 1024;
        // SAFETY: sysconf only reads a configuration value.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Ok(Machine {
            nofile_soft,
            nofile_hard,
            nr_open: number("/proc/sys/fs/nr_open")?,
            file_max: number("/proc/sys/fs/file-max")?,
            somaxconn: number("/proc/sys/net/core/somaxconn")?,
            syn_backlog: number("/proc/sys/net/ipv4/tcp_max_syn_backlog")?,
            port_range: match ports[..] {
                [low, high, ..] => (low, high),
                _ => return Err(short("/proc/sys/net/ipv4/ip_local_port_range")),
            },
            tcp_mem: match tcp_mem[..] {
                [a, b, c, ..] => [a, b, c],
                _ => return Err(short("/proc/sys/net/ipv4/tcp_mem")),
            },
            page_size,
            mem_total,
            conntrack_max: number("/proc/sys/net/netfilter/nf_conntrack_max").ok(),
        })
    }
}

fn numbers(path: &str) -> Result<Vec<u64>, ReadError> {
    let fail = |why: String| ReadError { what: path.into(), why };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    text.split_whitespace()
        .map(|w| w.parse().map_err(|_| fail(format!("{w:?} is not a number"))))
        .collect()
}

fn number(path: &str) -> Result<u64, ReadError> {
    numbers(path)?
        .first()
        .copied()
        .ok_or_else(|| ReadError { what: path.into(), why: "empty".into() })
}

/// What a limit means for N viewers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Enough.
    Ok,
    /// The node holds N, but a crowd arriving at once waits (retransmitted SYNs, 1 s then 3 s).
    Slow,
    /// The node cannot hold N viewers with this limit.
    Stops,
}

/// One limit, judged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The limit's name, as `sysctl` or `ulimit` knows it.
    pub limit: &'static str,
    pub value: String,
    /// What N viewers need (empty when nothing is needed of it).
    pub needed: String,
    pub verdict: Verdict,
    /// Why it matters, for a person.
    pub why: String,
    /// The command that lifts it, when one does.
    pub fix: Option<String>,
}

/// The report of `doctor`: every finding, and whether any would stop N viewers.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub viewers: u64,
    pub machine: Machine,
    pub findings: Vec<Finding>,
    /// True when some limit stops N viewers (the command then exits non-zero).
    pub blocked: bool,
}

/// Judges `m` for `viewers` concurrent viewers on one node.
pub fn examine(m: &Machine, viewers: u64) -> Report {
    // Saturating: `--viewers` is whatever a person typed.
    let fds = viewers.saturating_add(RESERVE_FDS);
    let mut f = Vec::new();
    let stops_if = |short: bool| if short { Verdict::Stops } else { Verdict::Ok };
    let slow_if = |short: bool| if short { Verdict::Slow } else { Verdict::Ok };

    f.push(Finding {
        limit: "ulimit -n (open files, hard)",
        value: format!("soft {}, hard {}", m.nofile_soft, m.nofile_hard),
        needed: format!("{fds}"),
        verdict: stops_if(m.nofile_hard < fds),
        why: "every viewer is a descriptor; `serve` raises the soft limit to the hard one itself"
            .into(),
        fix: (m.nofile_hard < fds).then(|| {
            format!(
                "ulimit -Hn {fds} && ulimit -n {fds}   # as root, in the shell that starts the \
                 node; under systemd: LimitNOFILE={fds}"
            )
        }),
    });
    f.push(Finding {
        limit: "fs.nr_open",
        value: m.nr_open.to_string(),
        needed: fds.to_string(),
        verdict: stops_if(m.nr_open < fds),
        why: "the highest any process's open-file limit may be raised to".into(),
        fix: (m.nr_open < fds).then(|| format!("sysctl -w fs.nr_open={fds}")),
    });
    let file_max = fds.saturating_add(fds / 10);
    f.push(Finding {
        limit: "fs.file-max",
        value: m.file_max.to_string(),
        needed: file_max.to_string(),
        verdict: stops_if(m.file_max < file_max),
        why: "open files of the whole system, the node's viewers among them".into(),
        fix: (m.file_max < file_max).then(|| format!("sysctl -w fs.file-max={file_max}")),
    });
    let backlog = (viewers / 100).clamp(1024, 65_535);
    f.push(Finding {
        limit: "net.core.somaxconn",
        value: m.somaxconn.to_string(),
        needed: backlog.to_string(),
        verdict: slow_if(m.somaxconn < backlog),
        why: "caps each listener's accept queue (the node asks for 65,535): a crowd reconnecting \
              at once overflows a short one and waits for SYN retransmits"
            .into(),
        fix: (m.somaxconn < backlog).then(|| "sysctl -w net.core.somaxconn=65535".into()),
    });
    f.push(Finding {
        limit: "net.ipv4.tcp_max_syn_backlog",
        value: m.syn_backlog.to_string(),
        needed: backlog.to_string(),
        verdict: slow_if(m.syn_backlog < backlog),
        why: "half-open connections waiting for their handshake during a connection storm".into(),
        fix: (m.syn_backlog < backlog)
            .then(|| "sysctl -w net.ipv4.tcp_max_syn_backlog=65535".into()),
    });
    let (low, high) = m.port_range;
    let ports = high.saturating_sub(low) + 1;
    f.push(Finding {
        limit: "net.ipv4.ip_local_port_range",
        value: format!("{low}-{high} ({ports} ports)"),
        needed: String::new(),
        verdict: Verdict::Ok,
        why: format!(
            "limits outgoing connections only, not viewers: a load simulator on this machine \
             needs {} source addresses for {viewers} (matchstream sim uses 64 on loopback)",
            viewers.div_ceil(ports.max(1))
        ),
        fix: None,
    });
    let burst_pages = viewers.saturating_mul(BURST_BYTES_PER_VIEWER).div_ceil(m.page_size.max(1));
    let [_, pressure, max] = m.tcp_mem;
    let tcp_verdict =
        if max < burst_pages { Verdict::Stops } else { slow_if(pressure < burst_pages) };
    let want = [
        burst_pages / 2,
        burst_pages.saturating_add(burst_pages / 4),
        burst_pages.saturating_mul(2),
    ];
    f.push(Finding {
        limit: "net.ipv4.tcp_mem",
        value: format!("{} {} {} pages", m.tcp_mem[0], pressure, max),
        needed: format!("{burst_pages} pages"),
        verdict: tcp_verdict,
        why: "TCP buffer memory of the whole system, counting a page queued per viewer in a \
              burst: past `pressure` the kernel shrinks buffers, past `max` writes to viewers \
              stall"
            .into(),
        fix: (tcp_verdict != Verdict::Ok).then(|| {
            let [a, b, c] = want.map(|w| w.max(1));
            format!("sysctl -w net.ipv4.tcp_mem=\"{a} {b} {c}\"")
        }),
    });
    let ram = viewers.saturating_mul(BYTES_PER_VIEWER);
    let room = (m.mem_total as f64 * RAM_SHARE) as u64;
    f.push(Finding {
        limit: "memory (MemTotal)",
        value: format!("{} MiB", m.mem_total >> 20),
        needed: format!(
            "{} MiB ({} KiB per viewer, node and kernel)",
            ram >> 20,
            BYTES_PER_VIEWER / 1024
        ),
        verdict: stops_if(room < ram),
        why: format!(
            "viewers may take {:.0}% of RAM; the rest is the node's and the system's",
            RAM_SHARE * 100.0
        ),
        fix: None,
    });
    if let Some(ct) = m.conntrack_max {
        let need = viewers.saturating_add(viewers / 10);
        f.push(Finding {
            limit: "net.netfilter.nf_conntrack_max",
            value: ct.to_string(),
            needed: need.to_string(),
            verdict: stops_if(ct < need),
            why: "connection tracking is loaded: once its table is full, new connections are \
                  dropped"
                .into(),
            fix: (ct < need).then(|| format!("sysctl -w net.netfilter.nf_conntrack_max={need}")),
        });
    }
    let blocked = f.iter().any(|x| x.verdict == Verdict::Stops);
    Report { viewers, machine: m.clone(), findings: f, blocked }
}

impl Report {
    /// The report for a person: one block per limit, then the verdict.
    pub fn text(&self) -> String {
        let mut out = format!(
            "matchstream doctor: this machine for {} viewers on one node\n\n",
            self.viewers
        );
        for x in &self.findings {
            let mark = match x.verdict {
                Verdict::Ok => "ok   ",
                Verdict::Slow => "SLOW ",
                Verdict::Stops => "STOPS",
            };
            let _ = write!(out, "{mark} {:<32} {}", x.limit, x.value);
            if !x.needed.is_empty() {
                let _ = write!(out, " (needs {})", x.needed);
            }
            let _ = writeln!(out, "\n      {}", x.why);
            if let Some(fix) = &x.fix {
                let _ = writeln!(out, "      fix: {fix}");
            }
        }
        let stops = self.findings.iter().filter(|x| x.verdict == Verdict::Stops).count();
        let slow = self.findings.iter().filter(|x| x.verdict == Verdict::Slow).count();
        let _ = match (stops, slow) {
            (0, 0) => writeln!(out, "\nNothing here stops {} viewers.", self.viewers),
            (0, s) => writeln!(out, "\nNothing here stops {} viewers; {s} limit(s) would slow a crowd arriving at once.", self.viewers),
            (n, _) => writeln!(out, "\n{n} limit(s) stop {} viewers: run the fixes above, then doctor again.", self.viewers),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A roomy machine: 64 GiB, generous limits, no conntrack.
    fn roomy() -> Machine {
        Machine {
            nofile_soft: 1024,
            nofile_hard: 2_000_000,
            nr_open: 2_000_000,
            file_max: 10_000_000,
            somaxconn: 65_535,
            syn_backlog: 65_535,
            port_range: (1024, 65_535),
            tcp_mem: [1_000_000, 2_000_000, 3_000_000],
            page_size: 4096,
            mem_total: 64 << 30,
            conntrack_max: None,
        }
    }

    fn verdict(r: &Report, limit: &str) -> Verdict {
        r.findings.iter().find(|f| f.limit.starts_with(limit)).map(|f| f.verdict).unwrap()
    }

    #[test]
    fn a_roomy_machine_holds_a_million() {
        let r = examine(&roomy(), 1_000_000);
        assert!(!r.blocked, "{}", r.text());
        assert!(r.findings.iter().all(|f| f.verdict == Verdict::Ok && f.fix.is_none()));
    }

    #[test]
    fn each_short_limit_is_named_with_its_fix() {
        let m = Machine {
            nofile_hard: 20_000,
            nr_open: 1_048_576,
            somaxconn: 4096,
            syn_backlog: 2048,
            conntrack_max: Some(262_144),
            ..roomy()
        };
        let r = examine(&m, 1_000_000);
        assert!(r.blocked);
        assert_eq!(verdict(&r, "ulimit -n"), Verdict::Stops);
        assert_eq!(verdict(&r, "fs.nr_open"), Verdict::Ok, "1,048,576 >= 1,000,512");
        assert_eq!(verdict(&r, "net.core.somaxconn"), Verdict::Slow);
        assert_eq!(verdict(&r, "net.ipv4.tcp_max_syn_backlog"), Verdict::Slow);
        assert_eq!(verdict(&r, "net.netfilter"), Verdict::Stops);
        let fixes: Vec<_> = r.findings.iter().filter_map(|f| f.fix.clone()).collect();
        assert!(fixes.iter().any(|f| f.starts_with("ulimit -Hn 1000512 && ulimit -n 1000512")));
        assert!(fixes.contains(&"sysctl -w net.core.somaxconn=65535".to_owned()));
        assert!(fixes.contains(&"sysctl -w net.netfilter.nf_conntrack_max=1100000".to_owned()));
        let text = r.text();
        assert!(text.contains("STOPS ulimit -n"), "{text}");
        assert!(text.contains("2 limit(s) stop 1000000 viewers"), "{text}");
    }

    #[test]
    fn memory_and_tcp_buffers_scale_with_viewers() {
        let m = Machine { mem_total: 2 << 30, tcp_mem: [1000, 2000, 3000], ..roomy() };
        let r = examine(&m, 1_000_000);
        assert_eq!(verdict(&r, "memory"), Verdict::Stops, "4 GiB needed, 1.6 available");
        assert_eq!(verdict(&r, "net.ipv4.tcp_mem"), Verdict::Stops);
        let r = examine(&m, 1_000);
        assert!(!r.blocked, "{}", r.text());
    }

    #[test]
    fn any_number_of_viewers_is_judged_without_overflow() {
        let r = examine(&roomy(), u64::MAX);
        assert!(r.blocked);
        assert_eq!(verdict(&r, "ulimit -n"), Verdict::Stops);
    }

    #[test]
    fn the_report_serialises_for_scripts() {
        let r = examine(&roomy(), 10);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["viewers"], 10);
        assert_eq!(json["blocked"], false);
        assert_eq!(json["findings"][0]["verdict"], "ok");
    }
}
