//! A real Redis Cluster (3 masters on loopback, started by the test) under two data planes: limits
//! stay exact (a subject's windows share its tenant's hash slot, so a decision is one script call),
//! fast mode keeps its bound, a revocation reaches both data planes within a second through the
//! cluster's pub/sub, and a master's failover is followed without a restart.

use std::time::{Duration, Instant};

use domain::testing::{RedisCluster, TestDb, unique_name};

use crate::helpers::{limits, seed, settings_for, spawn_gateway, until_deciding_on_redis};
use crate::nodes::{
    fast_mode_across_processes_keeps_its_bound, revocation_reaches_both_within_a_second,
    two_processes_admit_exactly_the_limit, two_subscribed_gateways_on,
};
use crate::upstream::spawn_upstream;

/// The cluster's URL with a fresh key prefix, as the test helpers take Redis.
fn redis_of(cluster: &RedisCluster) -> (String, String) {
    (cluster.url(), unique_name("gwcl"))
}

/// Keys under `prefix` on each master of the cluster.
fn keys_per_node(cluster: &RedisCluster, prefix: &str) -> Vec<usize> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            cluster
                .cli(n.port, &["--scan", "--pattern", &format!("{prefix}:*")])
                .lines()
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_data_planes_on_a_redis_cluster_admit_exactly_the_limits() {
    let Some(cluster) = RedisCluster::start(3, 0).await else {
        return;
    };
    let redis = redis_of(&cluster);
    two_processes_admit_exactly_the_limit(&redis).await;
    // The counters are in the cluster, on more than one master.
    let per_node = keys_per_node(&cluster, &redis.1);
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the masters: {per_node:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_mode_on_a_redis_cluster_stays_within_its_bound() {
    let Some(cluster) = RedisCluster::start(3, 0).await else {
        return;
    };
    fast_mode_across_processes_keeps_its_bound(&redis_of(&cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_both_data_planes_through_the_cluster_within_a_second() {
    let Some(cluster) = RedisCluster::start(3, 0).await else {
        return;
    };
    let nodes = two_subscribed_gateways_on(redis_of(&cluster)).await;
    revocation_reaches_both_within_a_second(&nodes).await;
}

/// A master of the tenant's slot dies; its replica takes over; the data plane follows the
/// failover (no restart) and decides exactly again: what the dead master had counted is what the
/// replica had replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failover_is_followed_without_a_restart() {
    let Some(mut cluster) = RedisCluster::start(3, 1).await else {
        return;
    };
    let redis = redis_of(&cluster);
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(
        &db.db,
        "acme",
        &upstream.url(""),
        limits(1, Some(60), None, None),
    )
    .await;
    let gw = spawn_gateway(settings_for(&db.url, Some(&redis)), None).await;
    for _ in 0..10 {
        assert_eq!(gw.get(&fx.path("/x"), &fx.key).await.status(), 200);
    }
    let key = format!("{}:{{t:{}}}:r:k:{}", redis.1, fx.tenant.id, fx.key_id);
    let master = cluster.master_of(&key).expect("a master of the key");
    // The replica has the counter: crash the master.
    cluster.wait_replicated(master).await;
    cluster.nodes[master].kill();
    let killed = Instant::now();
    // The cluster notices (node timeout: 1 s) and promotes the replica.
    while cluster.master_of(&key).is_none_or(|m| m == master) {
        assert!(killed.elapsed() < Duration::from_secs(20), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_ok().await;
    let failed_over = killed.elapsed();
    // The data plane decides through Redis again by itself (it may have judged Redis down while
    // the master was dead and unpromoted).
    until_deciding_on_redis(&gw.client, &gw.address, Duration::from_secs(30)).await;
    // The same gateway goes on deciding: 50 more of the burst of 60, then 429.
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while statuses.iter().filter(|s| **s == 200).count() < 50 {
        let s = gw.get(&fx.path("/x"), &fx.key).await.status().as_u16();
        assert!(
            Instant::now() < deadline,
            "no exact answers after the failover: {statuses:?}"
        );
        if s == 200 || s == 429 {
            statuses.push(s);
        }
    }
    assert!(
        !statuses.contains(&429),
        "refused before the burst was spent: {statuses:?}"
    );
    assert_eq!(gw.get(&fx.path("/x"), &fx.key).await.status(), 429);
    eprintln!("failover took {failed_over:?}");
}
