//! Reaching Redis: one server (a connection manager that reconnects by itself) or a Redis
//! Cluster, behind one connection type, with timeouts that make a Redis that is down fail calls
//! fast; over TLS for `rediss://` (rustls: the system's roots, or the operator's CA).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, TlsCertificates, Value};

use super::redis_err;
use crate::store::StoreError;

/// How long a command may take before the call fails (Redis down or stuck).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The two ways to reach Redis, behind one connection type.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis URL as it may be shown in a log line or an error (its passwords masked).
pub(super) use crate::config::redacted_url as redacted;

/// What to reach, parsed from the URL, and the certificates of a private CA for `rediss://`.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) nodes: Nodes,
    /// `--redis-ca-cert`: the roots a TLS connection trusts instead of the system's.
    certs: Option<TlsCertificates>,
}

/// One server, or the nodes of a cluster to start from: each a `redis://` or `rediss://` URL
/// with its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Nodes {
    Single(String),
    Cluster(Vec<String>),
}

impl Target {
    /// `redis://` or `rediss://` (TLS) for one server, `redis+cluster://` or
    /// `rediss+cluster://` for a cluster; `ca_pem`: the PEM of a private CA, for TLS only.
    pub(super) fn parse(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Target, StoreError> {
        let fail =
            |why: &str| Err(StoreError::Backend(format!("--redis {}: {why}", redacted(url))));
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let nodes = match scheme {
            "redis" | "rediss" => Nodes::Single(url.to_owned()),
            "redis+cluster" | "rediss+cluster" => {
                let nodes = cluster_nodes(scheme.trim_end_matches("+cluster"), rest);
                if nodes.is_empty() {
                    return fail("name at least one cluster node (redis+cluster://host:port,...)");
                }
                Nodes::Cluster(nodes)
            }
            _ => {
                return fail(
                    "expected redis://host:port or redis+cluster://host:port,... (rediss:// and \
                     rediss+cluster:// over TLS)",
                )
            }
        };
        let tls = scheme.starts_with("rediss");
        if ca_pem.is_some() && !tls {
            return fail(
                "--redis-ca-cert is for TLS: the URL must be rediss:// or rediss+cluster://",
            );
        }
        let certs = ca_pem.map(|pem| TlsCertificates { client_tls: None, root_cert: Some(pem) });
        Ok(Target { nodes, certs })
    }

    /// Every address a pub/sub connection may use, in order of preference.
    pub(super) fn addresses(&self) -> Vec<String> {
        match &self.nodes {
            Nodes::Single(url) => vec![url.clone()],
            Nodes::Cluster(nodes) => nodes.clone(),
        }
    }

    /// A client of one server at `url` (one of [`Target::addresses`]), with this target's CA.
    pub(super) fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match &self.certs {
            Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
            None => redis::Client::open(url),
        }
    }
}

/// The nodes of a cluster URL's `rest` (after `scheme+cluster://`), each as a `scheme://` URL.
/// Credentials written once, before the first host (`user:password@a:1,b:2`), are every host's,
/// so that a connection to any of them logs in; a host may name its own.
fn cluster_nodes(scheme: &str, rest: &str) -> Vec<String> {
    let hosts: Vec<&str> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|hp| hp.trim_end_matches('/'))
        .filter(|hp| !hp.rsplit_once('@').is_some_and(|(_, host)| host.is_empty()))
        .collect();
    let shared = hosts.first().and_then(|h| h.rsplit_once('@')).map(|(credentials, _)| credentials);
    hosts
        .iter()
        .map(|host| match shared {
            Some(credentials) if !host.contains('@') => format!("{scheme}://{credentials}@{host}"),
            _ => format!("{scheme}://{host}"),
        })
        .collect()
}

/// Connects to one server (reconnecting by itself) or to a cluster.
pub(super) async fn connect(target: &Target) -> Result<Conn, StoreError> {
    match &target.nodes {
        Nodes::Single(url) => {
            let client = target.client(url).map_err(redis_err)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let conn = client.get_connection_manager_with_config(config).await.map_err(|e| {
                StoreError::Backend(format!("cannot reach redis at {}: {e}", redacted(url)))
            })?;
            Ok(Conn::Single(conn))
        }
        Nodes::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(2);
            if let Some(certs) = &target.certs {
                builder = builder.certs(certs.clone());
            }
            let client = builder.build().map_err(redis_err)?;
            let conn = client.get_async_connection().await.map_err(|e| {
                StoreError::Backend(format!(
                    "cannot reach the redis cluster {}: {e}",
                    redacted(&nodes.join(","))
                ))
            })?;
            Ok(Conn::Cluster(conn))
        }
    }
}

#[cfg(test)]
mod urls {
    use super::{Nodes, Target};

    fn nodes(url: &str) -> Nodes {
        Target::parse(url, None).expect("a valid URL").nodes
    }

    #[test]
    fn one_server_plain_or_tls() {
        assert_eq!(nodes("redis://127.0.0.1:6379"), Nodes::Single("redis://127.0.0.1:6379".into()));
        let tls = "rediss://me:s3cr3t@redis.example.org:6380/0";
        assert_eq!(nodes(tls), Nodes::Single(tls.into()));
    }

    #[test]
    fn credentials_before_the_first_host_are_every_hosts() {
        assert_eq!(
            nodes("rediss+cluster://me:s3cr3t@a:1,b:2, c:3/"),
            Nodes::Cluster(vec![
                "rediss://me:s3cr3t@a:1".into(),
                "rediss://me:s3cr3t@b:2".into(),
                "rediss://me:s3cr3t@c:3".into(),
            ])
        );
        assert_eq!(
            nodes("redis+cluster://:pw@a:1,b:2"),
            Nodes::Cluster(vec!["redis://:pw@a:1".into(), "redis://:pw@b:2".into()])
        );
        // A host naming its own keeps them; without any, none.
        assert_eq!(
            nodes("redis+cluster://:pw@a:1,u:other@b:2"),
            Nodes::Cluster(vec!["redis://:pw@a:1".into(), "redis://u:other@b:2".into()])
        );
        assert_eq!(
            nodes("redis+cluster://a:1,b:2"),
            Nodes::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
    }

    #[test]
    fn a_cluster_url_with_credentials_makes_a_client_that_logs_in_everywhere() {
        // The redis crate refuses initial nodes with different passwords: each host must carry
        // them, and a client builds (TLS included) from what the parse gives.
        let target = Target::parse("rediss+cluster://me:s3cr3t@a:1,b:2,c:3", None).unwrap();
        let Nodes::Cluster(hosts) = &target.nodes else { panic!("a cluster") };
        assert!(redis::cluster::ClusterClient::new(hosts.clone()).is_ok());
        for host in hosts {
            let info = target.client(host).expect("a client").get_connection_info().clone();
            assert_eq!(info.redis_settings().username(), Some("me"));
            assert_eq!(info.redis_settings().password(), Some("s3cr3t"));
            assert!(matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }), "{host}: TLS");
        }
    }

    #[test]
    fn wrong_urls_and_a_ca_without_tls_are_refused_without_showing_the_password() {
        for url in ["http://me:s3cr3t@a:1", "redis+cluster://me:s3cr3t@", "me:s3cr3t@a:1"] {
            let e = Target::parse(url, None).expect_err(url).to_string();
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        let pem = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        let e = Target::parse("redis://me:s3cr3t@a:1", pem.clone()).unwrap_err().to_string();
        assert!(e.contains("--redis-ca-cert is for TLS") && !e.contains("s3cr3t"), "{e}");
        assert!(Target::parse("rediss://me:s3cr3t@a:1", pem).is_ok());
    }
}
