//! What the parent tells a worker process (the [`Job`], one JSON line on its stdin) and what the
//! worker answers (progress and final [`WorkerMsg`] lines on its stdout), plus the `--mix` of
//! interaction paths and of protocols, and how each is split between workers.

use serde::{Deserialize, Serialize};

use super::report::WorkerReport;
use super::{PathKind, Protocol, SimError};

/// What the viewers connect to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// MatchStream viewers of one match. With `viewers` empty, each TCP viewer asks
    /// `<server>/1/checkin` for a port, like a real client; otherwise they take turns. `server`
    /// may list the HTTP base URLs of several nodes, separated by commas (see checkin.rs);
    /// WebSocket and SSE viewers connect to those HTTP addresses. `protocol` is every viewer's
    /// unless the job's `protocols` share them out. `https://` servers speak TLS on every port
    /// (their HTTP port and their viewer ports, as a node with `--tls-cert` does), checked
    /// against `ca_cert` (a PEM file) or else the system's roots.
    Matchstream {
        server: String,
        match_id: String,
        protocol: Protocol,
        viewers: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_cert: Option<std::path::PathBuf>,
    },
    /// Redis pub/sub subscribers of one channel at `addr` (`host:port`).
    Redis { addr: String, channel: String },
    /// WebSocket subscribers of one public channel of a Pusher-protocol server (Sockudo) at
    /// `addr` (`host:port`), app `key`.
    Pusher { addr: String, key: String, channel: String },
}

impl Target {
    /// The name of the system under test, for summaries.
    pub fn system(&self) -> &'static str {
        match self {
            Target::Matchstream { .. } => "matchstream",
            Target::Redis { .. } => "redis",
            Target::Pusher { .. } => "pusher",
        }
    }

    /// The protocol spoken, for summaries.
    pub fn protocol(&self) -> &'static str {
        match self {
            Target::Matchstream { protocol, .. } => protocol.as_str(),
            Target::Redis { .. } => "resp",
            Target::Pusher { .. } => "pusher",
        }
    }

    /// Another system's subscribers (Redis, Pusher), which only watch, with no protocol of ours.
    pub fn is_peer(&self) -> bool {
        !matches!(self, Target::Matchstream { .. })
    }
}

/// How the interaction paths behave (the knobs of `--mix`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Behaviour {
    /// `late` viewers connect after a random delay up to this (ms).
    pub late_within_ms: u64,
    /// `leave` and `reconnect` viewers act after a random number of events, 1 up to this.
    pub act_after_max_events: u64,
    /// `slow` viewers sleep this long (ms) between small reads.
    pub slow_read_ms: u64,
    /// TCP connect, connect line and first byte must take less than this (ms); `/1/checkin`
    /// too.
    pub connect_timeout_ms: u64,
    /// v2 viewers that lose their connection without `bye match_over` (their node was killed:
    /// EOF or a reset; or it said `bye shutdown`) come back with `FROM` through checkin (or the
    /// `bye`'s `try`) instead of failing, like real clients (see resume.rs).
    #[serde(default)]
    pub resume: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            late_within_ms: 2_000,
            act_after_max_events: 20,
            slow_read_ms: 20,
            connect_timeout_ms: 10_000,
            resume: false,
        }
    }
}

/// Percentages of viewers per path (`--mix watch=70,late=10,...`), adding up to 100, and,
/// if given, per protocol (`--mix tcp:50,ws:30,sse:20`), adding up to 100 too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub percent: [u32; 5],
    /// Indexed like [`Protocol::ALL`]; all 0: every viewer speaks `--protocol`.
    pub protocols: [u32; 4],
}

impl Default for Mix {
    fn default() -> Self {
        Mix { percent: [100, 0, 0, 0, 0], protocols: [0; 4] }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    /// `watch=70,late=10,leave=10,reconnect=5,slow=5` (paths left out get 0; none: all watch)
    /// and `tcp:50,ws:30,sse:20` (protocols: `v1`, `v2` or its alias `tcp`, `ws`, `sse`; none:
    /// all `--protocol`), in one list or either alone.
    fn from_str(s: &str) -> Result<Mix, String> {
        let (mut percent, mut protocols) = ([0u32; 5], [0u32; 4]);
        let (mut any_path, mut any_protocol) = (false, false);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let number = |v: &str| {
                v.trim().parse::<u32>().map_err(|_| format!("{part:?}: not a percentage"))
            };
            if let Some((name, value)) = part.split_once(':') {
                let p: Protocol = name.trim().parse()?;
                protocols[p as usize] += number(value)?;
                any_protocol = true;
                continue;
            }
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected path=percent or protocol:percent"))?;
            let i =
                PathKind::ALL.iter().position(|p| p.as_str() == name.trim()).ok_or_else(|| {
                    format!("unknown path {name:?} (watch, late, leave, reconnect, slow)")
                })?;
            percent[i] = number(value)?;
            any_path = true;
        }
        if !any_path {
            percent = Mix::default().percent;
        }
        let total: u32 = percent.iter().sum();
        if total != 100 {
            return Err(format!("the mix of paths adds up to {total}, not 100"));
        }
        let total: u32 = protocols.iter().sum();
        if any_protocol && total != 100 {
            return Err(format!("the mix of protocols adds up to {total}, not 100"));
        }
        Ok(Mix { percent, protocols })
    }
}

impl Mix {
    pub fn get(&self, p: PathKind) -> u32 {
        self.percent[p as usize]
    }

    /// How many of `n` viewers speak each protocol, `default` (`--protocol`) for all without a
    /// mix of protocols: each its share rounded down, the rest to the first protocol named.
    pub fn protocol_counts(&self, n: u64, default: Protocol) -> ProtocolCounts {
        let mut c = [0u64; 4];
        let Some(first) = self.protocols.iter().position(|&p| p > 0) else {
            c[default as usize] = n;
            return ProtocolCounts(c);
        };
        for (i, pct) in self.protocols.iter().enumerate() {
            c[i] = n * u64::from(*pct) / 100;
        }
        c[first] += n - c.iter().sum::<u64>();
        ProtocolCounts(c)
    }

    /// How many of `n` viewers take each path: each path its share rounded down, the rest
    /// watch.
    pub fn counts(&self, n: u64) -> PathCounts {
        let mut c = [0u64; 5];
        for (i, pct) in self.percent.iter().enumerate().skip(1) {
            c[i] = n * u64::from(*pct) / 100;
        }
        c[0] = n - c[1..].iter().sum::<u64>();
        PathCounts(c)
    }
}

/// Viewers per path, indexed like [`PathKind::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCounts(pub [u64; 5]);

impl PathCounts {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Splits these counts between `w` workers as evenly as possible, path by path.
    pub fn split(&self, w: usize) -> Vec<PathCounts> {
        let mut out = vec![PathCounts::default(); w.max(1)];
        let mut turn = 0;
        for (p, &count) in self.0.iter().enumerate() {
            let base = count / out.len() as u64;
            let mut extra = count % out.len() as u64;
            for share in out.iter_mut() {
                share.0[p] = base;
            }
            // The remainders go round-robin across paths, so no worker gets all of them.
            while extra > 0 {
                out[turn % w.max(1)].0[p] += 1;
                turn += 1;
                extra -= 1;
            }
        }
        out
    }
}

/// Viewers per protocol, indexed like [`Protocol::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolCounts(pub [u64; 4]);

impl ProtocolCounts {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The protocols with viewers.
    pub fn present(&self) -> impl Iterator<Item = Protocol> + '_ {
        Protocol::ALL.into_iter().filter(|p| self.0[*p as usize] > 0)
    }

    /// Splits these counts between workers of `sizes` viewers (adding up to the total), each
    /// worker getting every protocol's share as nearly in proportion as whole viewers allow.
    pub fn split_like(&self, sizes: &[u64]) -> Vec<ProtocolCounts> {
        let mut left = self.0;
        let mut left_total = self.total();
        let mut out = Vec::with_capacity(sizes.len());
        for &size in sizes {
            let size = size.min(left_total);
            let mut share = [0u64; 4];
            for (s, l) in share.iter_mut().zip(left) {
                *s = (l * size).checked_div(left_total).unwrap_or(0);
            }
            // The viewers the rounding left go to the protocols with the most left over.
            let mut short = size - share.iter().sum::<u64>();
            while short > 0 {
                let mut best = 0;
                for i in 1..4 {
                    if left[i] - share[i] > left[best] - share[best] {
                        best = i;
                    }
                }
                share[best] += 1;
                short -= 1;
            }
            for (l, s) in left.iter_mut().zip(share) {
                *l -= s;
            }
            left_total -= size;
            out.push(ProtocolCounts(share));
        }
        out
    }
}

/// One worker's share of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// This worker's number, 0-based.
    pub worker: usize,
    pub target: Target,
    /// Global number of this worker's first viewer (user ids are `sim<number>`).
    pub first_viewer: u64,
    pub paths: PathCounts,
    /// Its viewers per protocol (adding up to its paths' total); all 0: every viewer speaks the
    /// target's protocol.
    #[serde(default)]
    pub protocols: ProtocolCounts,
    /// Viewers of this worker connecting at once.
    pub concurrency: usize,
    pub behaviour: Behaviour,
    /// Viewers stay until told to stop, and then count as complete.
    pub hold: bool,
    /// Viewers still running after this long (ms) stop and count as incomplete (or, holding,
    /// complete).
    pub duration_limit_ms: Option<u64>,
    /// Seeds this worker's random choices (delays, when to leave), for repeatable runs.
    pub seed: u64,
}

impl Job {
    /// Checks what would make the run meaningless.
    pub fn validate(&self) -> Result<(), SimError> {
        let usage = |s: &str| Err(SimError::Usage(s.to_owned()));
        if self.concurrency == 0 {
            return usage("-c must be at least 1");
        }
        let reconnecting = self.paths.0[PathKind::Reconnect as usize] > 0;
        let protocols = self.protocols();
        if let Target::Matchstream { server, viewers, .. } = &self.target {
            if viewers.is_empty() || protocols.present().any(|p| !p.is_tcp()) {
                super::checkin::servers(server)?;
            }
            if protocols.total() != self.paths.total() {
                return usage("the viewers per protocol do not add up to the viewers per path");
            }
        }
        let v1 = protocols.0[Protocol::V1 as usize] > 0;
        match &self.target {
            Target::Matchstream { .. } if v1 && reconnecting => {
                usage("--mix reconnect needs v2, ws or sse viewers (v1 cannot resume with FROM)")
            }
            Target::Matchstream { .. } if v1 && self.behaviour.resume => {
                usage("--resume needs v2, ws or sse viewers (v1 cannot resume with FROM)")
            }
            t if t.is_peer() && self.paths.0[0] != self.paths.total() => {
                usage("Redis and Pusher subscribers only watch: leave out --mix")
            }
            t if t.is_peer() && self.behaviour.resume => {
                usage("Redis and Pusher subscribers cannot resume: leave out --resume")
            }
            _ => Ok(()),
        }
    }
}

impl Job {
    /// Its viewers per protocol, the target's protocol for all when the job shares none out
    /// (none for Redis).
    pub fn protocols(&self) -> ProtocolCounts {
        match &self.target {
            Target::Matchstream { protocol, .. } if self.protocols.total() == 0 => {
                let mut c = [0u64; 4];
                c[*protocol as usize] = self.paths.total();
                ProtocolCounts(c)
            }
            _ => self.protocols,
        }
    }
}

/// A line a worker writes on its stdout.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Counters so far, every ~200 ms and as soon as all its viewers are connected.
    Progress(Counters),
    /// Everything, once its viewers are done.
    Final(Box<WorkerReport>),
}

/// Running counters of one worker (or, added up, of the run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Viewers whose first connect attempt began.
    pub started: u64,
    /// Viewers connected right now.
    pub connected: u64,
    /// Viewers that were connected at least once.
    pub ever_connected: u64,
    pub complete: u64,
    pub failed: u64,
    /// Events received, by every viewer.
    pub deliveries: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.started += o.started;
        self.connected += o.connected;
        self.ever_connected += o.ever_connected;
        self.complete += o.complete;
        self.failed += o.failed;
        self.deliveries += o.deliveries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_split_exactly() {
        let m: Mix = "watch=70,late=10,leave=10,reconnect=5,slow=5".parse().unwrap();
        assert_eq!(m.get(PathKind::Reconnect), 5);
        assert!("watch=70".parse::<Mix>().unwrap_err().contains("70"));
        assert!("watch=90,jump=10".parse::<Mix>().is_err());
        assert_eq!("leave=100".parse::<Mix>().unwrap().percent, [0, 0, 100, 0, 0]);
        let c = m.counts(1001);
        assert_eq!(c.0, [701, 100, 100, 50, 50]);
        let shares = c.split(3);
        assert_eq!(shares.len(), 3);
        for p in 0..5 {
            assert_eq!(shares.iter().map(|s| s.0[p]).sum::<u64>(), c.0[p]);
        }
        let totals: Vec<u64> = shares.iter().map(PathCounts::total).collect();
        assert!(totals.iter().max().unwrap() - totals.iter().min().unwrap() <= 1, "{totals:?}");
    }

    #[test]
    fn protocol_mixes_parse_count_and_split_exactly() {
        let m: Mix = "tcp:50,ws:30,sse:20".parse().unwrap();
        assert_eq!(m.percent, Mix::default().percent, "no paths: all watch");
        assert_eq!(m.protocols, [0, 50, 30, 20]);
        let both: Mix = "watch=90,slow=10, v1:10,v2:40,ws:50".parse().unwrap();
        assert_eq!((both.get(PathKind::Slow), both.protocols), (10, [10, 40, 50, 0]));
        assert!("ws:50".parse::<Mix>().unwrap_err().contains("protocols adds up to 50"));
        assert!("ws:50,smoke:50".parse::<Mix>().unwrap_err().contains("smoke"));
        assert!("ws:x".parse::<Mix>().is_err());

        // Without a mix of protocols, everyone speaks --protocol.
        assert_eq!(Mix::default().protocol_counts(7, Protocol::Sse).0, [0, 0, 0, 7]);
        let c = m.protocol_counts(1001, Protocol::V1);
        assert_eq!(c.0, [0, 501, 300, 200]);
        assert_eq!(c.present().collect::<Vec<_>>(), [Protocol::V2, Protocol::Ws, Protocol::Sse]);
        // Split like the paths were: every worker its size, every protocol its total.
        let sizes: Vec<u64> = m.counts(1001).split(3).iter().map(PathCounts::total).collect();
        let shares = c.split_like(&sizes);
        for (share, size) in shares.iter().zip(&sizes) {
            assert_eq!(share.total(), *size);
            assert!(share.0[2].abs_diff(size * 30 / 100) <= 1, "{share:?} of {size}");
        }
        for p in 0..4 {
            assert_eq!(shares.iter().map(|s| s.0[p]).sum::<u64>(), c.0[p]);
        }
        let odd = ProtocolCounts([0, 1, 1, 1]).split_like(&[1, 1, 1]);
        assert!(odd.iter().all(|s| s.total() == 1));
        assert_eq!(
            odd.iter().map(|s| s.0).fold([0; 4], |a, b| [
                a[0] + b[0],
                a[1] + b[1],
                a[2] + b[2],
                a[3] + b[3]
            ]),
            [0, 1, 1, 1]
        );
    }

    #[test]
    fn jobs_travel_as_json_and_refuse_v1_reconnects() {
        let job = Job {
            worker: 1,
            target: Target::Matchstream {
                server: "http://127.0.0.1:1".into(),
                match_id: "elp-tig-2011-09-10".into(),
                protocol: Protocol::V1,
                viewers: vec![],
                ca_cert: None,
            },
            first_viewer: 10,
            paths: PathCounts([1, 0, 0, 1, 0]),
            protocols: ProtocolCounts::default(),
            concurrency: 4,
            behaviour: Behaviour::default(),
            hold: false,
            duration_limit_ms: Some(5),
            seed: 7,
        };
        let back: Job = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(back.paths, job.paths);
        assert!(matches!(back.target, Target::Matchstream { protocol: Protocol::V1, .. }));
        assert!(!back.behaviour.resume);
        assert!(job.validate().is_err());
    }

    #[test]
    fn resume_travels_to_workers_and_needs_v2() {
        let mut job = Job {
            worker: 0,
            target: Target::Matchstream {
                server: "http://127.0.0.1:1,http://127.0.0.1:2".into(),
                match_id: "elp-tig-2011-09-10".into(),
                protocol: Protocol::V2,
                viewers: vec![],
                ca_cert: None,
            },
            first_viewer: 0,
            paths: PathCounts([3, 0, 0, 0, 0]),
            protocols: ProtocolCounts::default(),
            concurrency: 2,
            behaviour: Behaviour { resume: true, ..Behaviour::default() },
            hold: true,
            duration_limit_ms: None,
            seed: 1,
        };
        job.validate().unwrap();
        let line = serde_json::to_string(&job).unwrap();
        let back: Job = serde_json::from_str(&line).unwrap();
        assert!(back.behaviour.resume);
        assert!(matches!(&back.target, Target::Matchstream { server, .. } if server.contains(',')));
        // A job written without the field (an older parent) does not resume.
        let mut value: serde_json::Value = serde_json::from_str(&line).unwrap();
        value["behaviour"].as_object_mut().unwrap().remove("resume");
        assert!(!serde_json::from_value::<Job>(value).unwrap().behaviour.resume);

        let refused = |job: &Job| match job.validate() {
            Err(SimError::Usage(why)) => why,
            other => panic!("{other:?}"),
        };
        if let Target::Matchstream { server, .. } = &mut job.target {
            *server = "http://127.0.0.1:1,".into();
        }
        assert!(refused(&job).contains("empty"));
        job.target = Target::Matchstream {
            server: "http://127.0.0.1:1".into(),
            match_id: "elp-tig-2011-09-10".into(),
            protocol: Protocol::V1,
            viewers: vec![],
            ca_cert: None,
        };
        assert!(refused(&job).contains("--resume needs v2, ws or sse viewers"));
        job.target = Target::Redis { addr: "127.0.0.1:1".into(), channel: "c".into() };
        assert!(refused(&job).contains("--resume"));
    }
}
