//! Active health checks: for every API that has one, `GET <target><path>` on each target every
//! `interval_ms` (at most one check of a target at a time), through the same guarded connector
//! as requests. A target is taken out after `unhealthy_threshold` failed checks in a row and back
//! in after `healthy_threshold` good ones; the last check's latency and error are kept for
//! `/metrics` and the health report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use domain::resilience::HealthCheck;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use tokio::sync::watch;

use domain::target_health::{HealthReports, NodeReport, TargetReport};

use super::balance::{ApiUpstream, LiveTarget};
use crate::gateway::Gateway;
use crate::lock;

/// How often due checks are looked for.
const TICK: Duration = Duration::from_millis(50);

type CheckClient = Client<hyper_rustls::HttpsConnector<super::GuardedConnector>, Empty<Bytes>>;

/// Runs every API's active health checks until `stop`.
pub async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let clients = match (
        super::check_client(&gw.policy, false),
        super::check_client(&gw.policy, true),
    ) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "no client for health checks: none will run");
            return;
        }
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        for api in gw.upstreams.all() {
            let Some(hc) = api.health_check.clone() else {
                continue;
            };
            for i in 0..api.targets.len() {
                let t = &api.targets[i];
                if !t
                    .health
                    .check_due(now, Duration::from_millis(u64::from(hc.interval_ms)))
                {
                    continue;
                }
                let client = clients[usize::from(api.trusted)].clone();
                let (api, hc) = (api.clone(), hc.clone());
                tokio::spawn(async move {
                    let t = &api.targets[i];
                    let verdict = check(&client, t, &hc).await;
                    record(&api, t, &hc, verdict);
                    t.health.checking.store(false, Ordering::Release);
                });
            }
        }
    }
}

/// One check's result: its latency, or what failed.
type Verdict = Result<Duration, String>;

async fn check(client: &CheckClient, t: &LiveTarget, hc: &HealthCheck) -> Verdict {
    let e = &t.entry;
    let uri: Uri = format!(
        "{}://{}{}{}",
        if e.tls { "https" } else { "http" },
        e.authority,
        e.path,
        hc.path
    )
    .parse()
    .map_err(|_| "the check's URL is not valid".to_owned())?;
    let req = Request::get(uri)
        .header(http::header::HOST, &*e.authority)
        .header(http::header::USER_AGENT, "gateway-health-check")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let timeout = Duration::from_millis(u64::from(hc.timeout_ms));
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
        })?;
        let status = resp.status().as_u16();
        // Read to the end, so the connection can be kept for the next check.
        let _ = resp.into_body().collect().await;
        if hc.healthy_status(status) {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(format!("no answer within {} ms", hc.timeout_ms)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(started.elapsed()),
    }
}

fn record(api: &ApiUpstream, t: &LiveTarget, hc: &HealthCheck, verdict: Verdict) {
    let mut report = lock(&t.health.check);
    let was = t.health.is_healthy();
    match verdict {
        Ok(latency) => {
            report.latency_ms = Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
            report.error = None;
            report.consecutive_ok += 1;
            report.consecutive_failed = 0;
            if !was && report.consecutive_ok >= hc.healthy_threshold {
                t.health.set_healthy(true);
            }
        }
        Err(e) => {
            report.latency_ms = None;
            report.error = Some(e);
            report.consecutive_failed += 1;
            report.consecutive_ok = 0;
            if was && report.consecutive_failed >= hc.unhealthy_threshold {
                t.health.set_healthy(false);
            }
        }
    }
    if was != t.health.is_healthy() {
        tracing::info!(
            api_id = api.api_id,
            target_id = t.entry.id,
            url = %t.entry.url,
            up = t.health.is_healthy(),
            error = report.error.as_deref().unwrap_or(""),
            "health check changed a target's state"
        );
    }
}

/// Reports every API's targets, as this data plane sees them, every `every` until `stop` (see
/// `domain::target_health`).
pub async fn report_until(
    gw: Arc<Gateway>,
    reports: HealthReports,
    node: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let batch = node_reports(&gw, &node);
        match reports.write(&batch).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not report the targets' health; retrying");
            }
            Err(_) => {}
        }
    }
}

/// This node's report of each API's targets, now.
pub fn node_reports(gw: &Gateway, node: &str) -> Vec<(i64, NodeReport)> {
    let read = || gw.clock.now_ms();
    let now = super::balance::Now::of(&read);
    let at_ms = chrono::Utc::now().timestamp_millis();
    gw.upstreams
        .all()
        .iter()
        .map(|api| {
            let targets = api
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let check = t.health.check_report();
                    TargetReport {
                        target_id: t.entry.id,
                        url: t.entry.url.to_string(),
                        up: api.is_up(i, &now),
                        circuit: t.health.circuit_state().as_str().to_owned(),
                        last_check_ms: check.latency_ms,
                        last_error: check.error,
                        consecutive_failures: t.health.consecutive_failures(),
                        in_flight: t.health.in_flight(),
                    }
                })
                .collect();
            (
                api.api_id,
                NodeReport {
                    node: node.to_owned(),
                    at_ms,
                    targets,
                },
            )
        })
        .collect()
}

/// This data plane's default node name: `<hostname>:<port>`.
pub fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "data-plane".to_owned());
    format!("{host}:{port}")
}
