//! What one fast-mode decision costs the limiter when its lease is in hand (no Redis round trip:
//! the lease is made large enough to last the run), on one thread and on two threads spending the
//! same subject, as two data-plane workers do under one busy key.
//!
//! `TEST_REDIS_URL=redis://127.0.0.1:6379/ cargo run --release -p domain --example fast_spend`

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::clock::SystemClock;
use domain::limits::redis::{RedisStore, pool};
use domain::limits::{Limiter, LimiterSettings, Subject};
use domain::plan::{Enforcement, PlanLimits};

const DECISIONS: u32 = 2_000_000;
const ROUNDS: usize = 3;

fn runtime() -> tokio::runtime::Runtime {
    #[allow(clippy::expect_used)]
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

#[allow(clippy::expect_used, clippy::unwrap_used)]
fn main() {
    let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL: the Redis to lease from");
    let settings = LimiterSettings {
        lease_max: 100_000_000,
        lease_ttl: Duration::from_mins(1),
        ..LimiterSettings::default()
    };
    let limiter = runtime().block_on(async {
        let prefix = format!("fast-spend-{}", std::process::id());
        let store = RedisStore::new(pool(&url).unwrap(), prefix);
        Limiter::new(Some(store), settings, Arc::new(SystemClock), None)
    });
    let plan = PlanLimits::new(1_000_000_000, None, None, None).unwrap();
    let subject = Subject::Key {
        tenant_id: 1,
        key_id: 1,
    };
    for threads in [1, 2] {
        for _ in 0..ROUNDS {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let (limiter, url) = (limiter.clone(), url.clone());
                    s.spawn(move || {
                        runtime().block_on(async move {
                            let store = limiter.redis_store().unwrap();
                            store
                                .attach_current_thread(
                                    &domain::redis_pool::Endpoint::parse(&url).unwrap(),
                                )
                                .unwrap();
                            for _ in 0..DECISIONS {
                                let (d, _) = limiter
                                    .check_with(subject, &plan, Enforcement::Fast)
                                    .await
                                    .unwrap();
                                assert!(d.allowed);
                            }
                        });
                    });
                }
            });
            let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(DECISIONS);
            println!("threads={threads} ns_per_decision={ns:.0}");
        }
    }
}
