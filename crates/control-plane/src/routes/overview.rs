//! The tenant's overview: traffic today and this month, charts, top keys, a curl to copy.

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{Datelike, Duration, NaiveDate, Utc};
use domain::store::{self, UsageFilter};
use domain::usage::Counts;

use crate::errors::UiError;
use crate::pages::{Chart, Layout, render};
use crate::session::TenantUser;
use crate::state::AppState;

pub struct TopKey {
    pub name: String,
    pub prefix: String,
    pub requests: i64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    today: Counts,
    month: Counts,
    minutes: Chart,
    days: Chart,
    top_keys: Vec<TopKey>,
    curl: Option<String>,
    api_count: usize,
    plan_count: usize,
    key_count: u64,
}

pub fn month_start(today: NaiveDate) -> NaiveDate {
    today.with_day(1).unwrap_or(today)
}

pub async fn overview(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let db = &state.db;
    let tid = u.tenant.id;
    let now = Utc::now();
    let today = now.date_naive();
    let all = UsageFilter::default();

    let daily = store::daily(
        db,
        tid,
        (today - Duration::days(29)).min(month_start(today)),
        today,
        all,
    )
    .await?;
    let mut month = Counts::default();
    let mut today_counts = Counts::default();
    for (day, c) in &daily {
        if *day >= month_start(today) {
            month.add(*c);
        }
        if *day == today {
            today_counts = *c;
        }
    }
    let day_points: Vec<(String, i64, i64)> = (0..30)
        .map(|i| {
            let d = today - Duration::days(29 - i);
            let c = daily
                .iter()
                .find(|(day, _)| *day == d)
                .map_or_else(Counts::default, |(_, c)| *c);
            (d.format("%b %-d").to_string(), c.requests, c.rejected)
        })
        .collect();

    let now_minute = now.timestamp().div_euclid(60);
    let minutes = store::minutes(db, tid, now_minute - 59, now_minute, all).await?;
    let minute_points: Vec<(String, i64, i64)> = (0..60)
        .map(|i| {
            let m = now_minute - 59 + i;
            let c = minutes
                .iter()
                .find(|(mm, _)| *mm == m)
                .map_or_else(Counts::default, |(_, c)| *c);
            let label = chrono::DateTime::from_timestamp(m * 60, 0)
                .map_or_else(String::new, |t| t.format("%H:%M UTC").to_string());
            (label, c.requests, c.rejected)
        })
        .collect();

    let per_key = store::per_key_since(db, tid, month_start(today), &[]).await?;
    let mut ranked: Vec<(i64, i64)> = per_key.iter().map(|(k, c)| (*k, c.requests)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(5);
    let mut top_keys = Vec::new();
    for (key_id, requests) in ranked {
        if let Ok(k) = store::get_key(db, tid, key_id).await {
            top_keys.push(TopKey {
                name: k.name,
                prefix: k.prefix,
                requests,
            });
        }
    }

    let apis = store::list_apis(db, tid).await?;
    let curl = apis.iter().find(|a| a.is_active).or(apis.first()).map(|a| {
        format!(
            "curl -H '{}: YOUR_API_KEY' {}/{}/{}/",
            a.key_header, state.public_url, u.tenant.slug, a.slug
        )
    });
    let plan_count = store::list_plans(db, tid).await?.len();
    let key_count = store::count_keys(db, tid).await?;
    let layout = Layout::tenant(&u, &state, "Overview", "overview");
    render(&OverviewPage {
        layout,
        today: today_counts,
        month,
        minutes: Chart::new(&minute_points, 600),
        days: Chart::new(&day_points, 600),
        top_keys,
        curl,
        api_count: apis.len(),
        plan_count,
        key_count,
    })
}
