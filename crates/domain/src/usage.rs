//! Usage counts: what data planes record per (tenant, api, key, client, minute), how they are laid
//! out in Redis (minute buckets, kept two days) and read back.

use std::collections::HashMap;

use crate::redis_pool::Pool;

/// How long minute buckets stay in Redis; older history comes from the daily rollups.
pub const MINUTE_BUCKET_TTL_SECS: i64 = 2 * 86_400;

/// One bucket of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub tenant_id: i64,
    pub api_id: i64,
    pub key_id: i64,
    /// Row id of the client, 0 when no `X-Client-ID` was sent.
    pub client_id: i64,
    /// The route the request took, 0 when its API has no routes (the database keeps it; the
    /// live minute counts in Redis add the routes of an (api, key, client) together).
    pub route_id: i64,
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Every authenticated request, rejected ones included.
    pub requests: i64,
    /// Requests refused with 429.
    pub rejected: i64,
    /// Admitted requests whose upstream failed (5xx, 502, 504).
    pub upstream_errors: i64,
    /// Units the limits consumed: each admitted request's cost (what the limit counters are
    /// started from when Redis has lost them).
    pub units: i64,
}

impl Counts {
    pub fn add(&mut self, other: Self) {
        self.requests += other.requests;
        self.rejected += other.rejected;
        self.upstream_errors += other.upstream_errors;
        self.units += other.units;
    }
}

/// Redis hash holding one tenant's counts of one minute.
pub fn minute_key(prefix: &str, tenant_id: i64, minute: i64) -> String {
    format!("{prefix}:{{t:{tenant_id}}}:u:{minute}")
}

/// Field of a (api, key, client) counter in a minute hash; `kind` is `r`, `x` or `e`.
pub fn field(api_id: i64, key_id: i64, client_id: i64, kind: char) -> String {
    format!("{api_id}:{key_id}:{client_id}:{kind}")
}

fn parse_field(f: &str) -> Option<((i64, i64, i64), char)> {
    let mut it = f.split(':');
    let api = it.next()?.parse().ok()?;
    let key = it.next()?.parse().ok()?;
    let client = it.next()?.parse().ok()?;
    let kind = it.next()?.chars().next()?;
    Some(((api, key, client), kind))
}

/// Adds `counts` to Redis in one pipeline (the data plane's flush).
pub async fn write_minutes<S: std::hash::BuildHasher>(
    pool: &Pool,
    prefix: &str,
    counts: &HashMap<Bucket, Counts, S>,
) -> Result<(), redis::RedisError> {
    if counts.is_empty() {
        return Ok(());
    }
    let conn = pool.get().await?;
    // A pipeline per tenant: on a cluster a pipeline's keys share a slot, and a tenant's minute
    // keys share its hash tag (the pipelines share the multiplexed connection).
    let mut pipes: HashMap<i64, (redis::Pipeline, std::collections::HashSet<String>)> =
        HashMap::new();
    for (b, c) in counts {
        let key = minute_key(prefix, b.tenant_id, b.minute);
        let (pipe, keys) = pipes.entry(b.tenant_id).or_default();
        for (kind, v) in [
            ('r', c.requests),
            ('x', c.rejected),
            ('e', c.upstream_errors),
        ] {
            if v != 0 {
                pipe.hincr(&key, field(b.api_id, b.key_id, b.client_id, kind), v)
                    .ignore();
            }
        }
        keys.insert(key);
    }
    let writes = pipes.into_values().map(|(mut pipe, keys)| {
        for key in keys {
            pipe.expire(key, MINUTE_BUCKET_TTL_SECS).ignore();
        }
        let mut conn = conn.clone();
        async move { pipe.query_async::<()>(&mut conn).await }
    });
    for r in futures_util::future::join_all(writes).await {
        r?;
    }
    Ok(())
}

/// Per-(api, key, client) counts of a tenant for each minute in `minutes` (from Redis).
pub async fn read_minutes(
    pool: &Pool,
    prefix: &str,
    tenant_id: i64,
    minutes: impl IntoIterator<Item = i64>,
) -> Result<Vec<(i64, HashMap<(i64, i64, i64), Counts>)>, redis::RedisError> {
    let minutes: Vec<i64> = minutes.into_iter().collect();
    let mut conn = pool.get().await?;
    let mut pipe = redis::pipe();
    for m in &minutes {
        pipe.hgetall(minute_key(prefix, tenant_id, *m));
    }
    let hashes: Vec<HashMap<String, i64>> = pipe.query_async(&mut conn).await?;
    Ok(minutes
        .into_iter()
        .zip(hashes)
        .map(|(m, h)| {
            let mut per: HashMap<(i64, i64, i64), Counts> = HashMap::new();
            for (f, v) in h {
                if let Some((id, kind)) = parse_field(&f) {
                    let c = per.entry(id).or_default();
                    match kind {
                        'r' => c.requests += v,
                        'x' => c.rejected += v,
                        'e' => c.upstream_errors += v,
                        _ => {}
                    }
                }
            }
            (m, per)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        assert_eq!(parse_field(&field(1, 22, 0, 'r')), Some(((1, 22, 0), 'r')));
        assert_eq!(parse_field("x"), None);
        assert_eq!(minute_key("gw", 5, 29_000_000), "gw:{t:5}:u:29000000");
    }

    #[tokio::test]
    async fn minute_counts_add_up_in_redis() {
        let Some(url) = crate::testing::redis_url() else {
            return;
        };
        let pool = crate::limits::redis::pool(&url).unwrap();
        let prefix = crate::testing::unique_name("gwtest");
        let b = Bucket {
            tenant_id: 1,
            api_id: 2,
            key_id: 3,
            client_id: 0,
            route_id: 0,
            minute: 100,
        };
        let c = Counts {
            requests: 5,
            rejected: 1,
            upstream_errors: 2,
            units: 4,
        };
        let batch: HashMap<Bucket, Counts> = [(b, c), (Bucket { minute: 101, ..b }, c)].into();
        write_minutes(&pool, &prefix, &batch).await.unwrap();
        write_minutes(&pool, &prefix, &batch).await.unwrap();
        let got = read_minutes(&pool, &prefix, 1, [100, 101, 102])
            .await
            .unwrap();
        assert_eq!(
            got[0].1[&(2, 3, 0)],
            Counts {
                requests: 10,
                rejected: 2,
                upstream_errors: 4,
                units: 0,
            }
        );
        assert_eq!(got[1].1[&(2, 3, 0)].requests, 10);
        assert!(got[2].1.is_empty());
    }
}
