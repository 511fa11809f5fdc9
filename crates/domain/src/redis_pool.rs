//! Connections to Redis: one server (a small pool of multiplexed connections) or a Redis Cluster
//! (one multiplexed cluster connection, which follows `MOVED`/`ASK` redirections and a master's
//! failover by itself), over TCP or TLS (`rediss://`, optionally trusting a private CA).
//!
//! `GATEWAY_REDIS_URL` names a cluster by its scheme: `redis+cluster://` (or `rediss+cluster://`)
//! followed by one or more seed nodes, comma-separated, e.g.
//! `redis+cluster://user:password@10.0.0.1:7000,10.0.0.2:7000`; the rest of the cluster is
//! discovered from them. One setting, not a separate switch: the URL alone says what to connect to.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use rustls::pki_types::pem::PemObject;

/// Most connections of one single-server pool (the store's, and each worker's own).
pub const POOL_SIZE: usize = 16;

/// How long answers are awaited on connections that bound their calls themselves (the limiter's
/// dispatchers): longer than any call's own deadline, which is what answers its requests.
const UNBOUNDED_ANSWER: Duration = Duration::from_mins(1);

/// Where Redis is: the parsed `GATEWAY_REDIS_URL` (and the CA that `rediss://` trusts).
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The server, or a cluster's seed nodes.
    nodes: Vec<ConnectionInfo>,
    cluster: bool,
    /// PEM of the CA certificates a TLS Redis is verified against (else the system's roots).
    ca_pem: Option<Arc<Vec<u8>>>,
}

/// Why a Redis URL (or its CA) cannot be used; the message names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(String);

const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

impl Endpoint {
    /// Parses `url`: `redis://`, `rediss://`, or a cluster's `redis+cluster://` /
    /// `rediss+cluster://` with comma-separated seed nodes.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let bad = |e: &dyn std::fmt::Display| EndpointError(format!("not a Redis URL ({e})"));
        let cluster = CLUSTER_SCHEMES.iter().find(|(s, _)| url.starts_with(s));
        let urls: Vec<String> = match cluster {
            None => vec![url.to_owned()],
            Some((scheme, single)) => {
                let rest = &url[scheme.len()..];
                // `user:password@` (if any) before the hosts, `/db?…` after them.
                let (auth, hosts_and_tail) = match rest.rfind('@') {
                    Some(at) => (&rest[..=at], &rest[at + 1..]),
                    None => ("", rest),
                };
                let end = hosts_and_tail
                    .find(['/', '?', '#'])
                    .unwrap_or(hosts_and_tail.len());
                let (hosts, tail) = hosts_and_tail.split_at(end);
                let urls: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{single}{auth}{h}{tail}"))
                    .collect();
                if urls.is_empty() {
                    return Err(EndpointError(
                        "a cluster URL names no node (redis+cluster://host:port,host:port)".into(),
                    ));
                }
                urls
            }
        };
        let nodes = urls
            .iter()
            .map(|u| u.as_str().into_connection_info().map_err(|e| bad(&e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            nodes,
            cluster: cluster.is_some(),
            ca_pem: None,
        })
    }

    /// The endpoint verifying a TLS Redis against the CA certificates in `pem` (instead of the
    /// system's): only for `rediss://` URLs.
    pub fn trusting(mut self, pem: Vec<u8>) -> Result<Self, EndpointError> {
        if !self.is_tls() {
            return Err(EndpointError(
                "a CA is set but the URL is not a TLS one (rediss:// or rediss+cluster://)".into(),
            ));
        }
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EndpointError(format!("not PEM certificates ({e})")))?;
        if certs.is_empty() {
            return Err(EndpointError("holds no PEM certificate".into()));
        }
        self.ca_pem = Some(Arc::new(pem));
        Ok(self)
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    fn is_tls(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n.addr(), redis::ConnectionAddr::TcpTls { .. }))
    }

    /// `host:port` of each node the URL names (the cluster's seeds), for the upstream policy.
    pub fn addresses(&self) -> Vec<(String, u16)> {
        self.nodes
            .iter()
            .filter_map(|n| match n.addr() {
                redis::ConnectionAddr::Tcp(h, p)
                | redis::ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => Some((h.clone(), *p)),
                _ => None,
            })
            .collect()
    }

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        })
    }

    /// A client of one node (TLS with the CA when one is set).
    fn client(&self, node: &ConnectionInfo) -> Result<redis::Client, RedisError> {
        let info = node
            .clone()
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        match self.certificates() {
            Some(certs) => redis::Client::build_with_tls(info, certs),
            None => redis::Client::open(info),
        }
    }

    /// A pub/sub connection to the first node that answers (on a cluster, classic pub/sub: a
    /// message published on any node reaches the subscribers of every node).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        let mut last = None;
        for node in &self.nodes {
            match self.client(node)?.get_async_pubsub().await {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((redis::ErrorKind::Io, "no Redis node"))))
    }

    /// A pool of connections to this endpoint (nothing connects until first use), answering within
    /// redis-rs's default timeout.
    pub fn pool(&self) -> Result<Pool, RedisError> {
        self.build(None)
    }

    /// A pool whose calls are bounded by their callers, not by an answer timeout of its own.
    pub fn unbounded_pool(&self) -> Result<Pool, RedisError> {
        self.build(Some(UNBOUNDED_ANSWER))
    }

    fn build(&self, answer_within: Option<Duration>) -> Result<Pool, RedisError> {
        if self.cluster {
            let mut b = ClusterClient::builder(self.nodes.clone())
                .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
            if let Some(certs) = self.certificates() {
                b = b.certs(certs);
            }
            if let Some(t) = answer_within {
                b = b.response_timeout(t);
            }
            let client = b.build()?;
            return Ok(Pool(Inner::Cluster(Arc::new(ClusterPool {
                client,
                conn: tokio::sync::Mutex::new(None),
            }))));
        }
        let config = answer_within.map(|t| {
            redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(t))
                .set_connection_timeout(None)
        });
        let manager = Manager {
            client: self.client(&self.nodes[0])?,
            config,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| RedisError::from((redis::ErrorKind::Io, "redis pool", e.to_string())))?;
        Ok(Pool(Inner::Single(pool)))
    }
}

/// Connections to one Redis deployment; cheap to clone.
#[derive(Clone)]
pub struct Pool(Inner);

#[derive(Clone)]
enum Inner {
    Single(managed::Pool<Manager>),
    Cluster(Arc<ClusterPool>),
}

struct ClusterPool {
    client: ClusterClient,
    /// The one cluster connection, opened on first use (it multiplexes every caller's commands).
    conn: tokio::sync::Mutex<Option<ClusterConnection>>,
}

/// How long opening a connection may take before the caller is told Redis is unreachable.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

impl Pool {
    /// A connection: a verified one of the pool (single server), or the cluster connection.
    pub async fn get(&self) -> Result<Conn, RedisError> {
        match &self.0 {
            Inner::Single(pool) => match pool.get().await {
                Ok(obj) => Ok(Conn::Single(MultiplexedConnection::clone(&obj))),
                Err(managed::PoolError::Backend(e)) => Err(e),
                Err(e) => Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "redis pool",
                    e.to_string(),
                ))),
            },
            Inner::Cluster(c) => {
                let mut held = c.conn.lock().await;
                if let Some(conn) = &*held {
                    return Ok(Conn::Cluster(conn.clone()));
                }
                let conn = tokio::time::timeout(CONNECT_WITHIN, c.client.get_async_connection())
                    .await
                    .map_err(|_| {
                        RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                    })??;
                *held = Some(conn.clone());
                Ok(Conn::Cluster(conn))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }
}

/// One connection (a clone of a multiplexed one: many callers share it), single or cluster.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The hash slot of `key` (of its `{hash tag}` when it has one): what a Redis Cluster requires every
/// key of one command, script call or pipeline to share.
pub fn slot(key: &str) -> redis::cluster_routing::Slot {
    redis::cluster_routing::Slot::for_key(key)
}

/// Creates and recycles single-server connections (deadpool-redis's manager, on a client that may
/// carry a private CA).
struct Manager {
    client: redis::Client,
    config: Option<redis::AsyncConnectionConfig>,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        match &self.config {
            Some(c) => {
                self.client
                    .get_multiplexed_async_connection_with_config(c)
                    .await
            }
            None => self.client.get_multiplexed_async_connection().await,
        }
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &managed::Metrics,
    ) -> managed::RecycleResult<RedisError> {
        let () = redis::cmd("PING")
            .query_async::<String>(conn)
            .await
            .map(drop)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_seed_with_the_credentials() {
        let e = Endpoint::parse("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001/").unwrap();
        assert!(e.is_cluster());
        assert_eq!(
            e.addresses(),
            vec![("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 7001)]
        );
        let info = &e.nodes[1];
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p@ss"));
        let single = Endpoint::parse("redis://127.0.0.1:6379/").unwrap();
        assert!(!single.is_cluster());
        assert!(Endpoint::parse("redis+cluster://").is_err());
        assert!(Endpoint::parse("http://x").is_err());
    }

    #[test]
    fn a_ca_is_only_for_tls_urls() {
        let plain = Endpoint::parse("redis://127.0.0.1/").unwrap();
        assert!(
            plain
                .trusting(b"x".to_vec())
                .unwrap_err()
                .0
                .contains("rediss://")
        );
        let tls = Endpoint::parse("rediss://127.0.0.1/").unwrap();
        assert!(tls.trusting(b"not pem".to_vec()).is_err());
    }

    #[test]
    fn keys_of_one_tenant_share_a_slot() {
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("gw:{t:1}:r:k:7"), slot("gw:{t:1}:r:t"));
        assert_ne!(slot("gw:{t:1}:r:k:7"), slot("gw:{t:2}:r:k:7"));
    }

    /// What the data plane writes besides its decisions — a flush of several tenants' minute
    /// counts, a node's health reports of several APIs — lands on a cluster, whose slots differ.
    #[tokio::test]
    async fn usage_and_health_reports_of_many_slots_work_on_a_cluster() {
        use crate::target_health::{HealthReports, NodeReport};
        use crate::usage::{Bucket, Counts, read_minutes, write_minutes};
        let Some(cluster) = crate::testing::RedisCluster::start(3, 0).await else {
            return;
        };
        let pool = Endpoint::parse(&cluster.url()).unwrap().pool().unwrap();
        assert!(pool.is_cluster());
        let prefix = "gwcl";
        let batch: std::collections::HashMap<Bucket, Counts> = (1..=6)
            .map(|t| {
                let b = Bucket {
                    tenant_id: t,
                    api_id: 1,
                    key_id: 2,
                    client_id: 0,
                    route_id: 0,
                    minute: 100,
                };
                let c = Counts {
                    requests: t,
                    ..Counts::default()
                };
                (b, c)
            })
            .collect();
        write_minutes(&pool, prefix, &batch).await.unwrap();
        for t in 1..=6 {
            let got = read_minutes(&pool, prefix, t, [100]).await.unwrap();
            assert_eq!(got[0].1[&(1, 2, 0)].requests, t, "tenant {t}");
        }

        let db = crate::testing::TestDb::sqlite().await;
        let reports = HealthReports::new(Some((pool, prefix.to_owned())), db.db.clone());
        let now = chrono::Utc::now().timestamp_millis();
        let report = |node: &str| NodeReport {
            node: node.to_owned(),
            at_ms: now,
            targets: Vec::new(),
        };
        let written: Vec<(i64, NodeReport)> = (1..=5).map(|api| (api, report("dp-1"))).collect();
        reports.write(&written).await.unwrap();
        for api in 1..=5 {
            assert_eq!(reports.read(api, now).await.unwrap(), vec![report("dp-1")]);
        }
    }
}
