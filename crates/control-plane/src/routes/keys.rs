//! API keys: issue (shown once), list, revoke, rotate.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use domain::entities::{api_key, plan};
use domain::store::{self, StoreError};
use domain::validate::{self, Problems};
use serde::Deserialize;

use super::overview::month_start;
use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_secret, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

pub const PAGE_SIZE: u64 = 50;

pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub plan: String,
    pub created: String,
    pub last_used: String,
    pub status: &'static str,
    pub status_note: String,
    pub usage: String,
    pub active: bool,
    /// What rotation made of it: `replaced by gw_live_ab12…`, `replaces gw_live_cd34…`.
    pub lineage: Vec<String>,
    /// Already replaced: rotate its replacement instead.
    pub rotated: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    page: u64,
    pages: u64,
    total: u64,
    has_plans: bool,
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<u64>,
}

/// A time in the key list, whose column heads say UTC.
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

pub async fn list(
    u: TenantUser,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, UiError> {
    let db = &state.db;
    let tid = u.tenant.id;
    let total = store::count_keys(db, tid).await?;
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let keys = store::list_keys(db, tid, (page - 1) * PAGE_SIZE, PAGE_SIZE).await?;
    let plans: HashMap<i64, plan::Model> = store::list_plans(db, tid)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let now = Utc::now();
    let ids: Vec<i64> = keys.iter().map(|k| k.id).collect();
    let usage = store::per_key_since(db, tid, month_start(now.date_naive()), &ids).await?;
    let replacements: Vec<i64> = keys.iter().filter_map(|k| k.replaced_by).collect();
    let partners = store::rotation_partners(db, tid, &ids, &replacements).await?;
    let related: HashMap<i64, &api_key::Model> =
        keys.iter().chain(&partners).map(|k| (k.id, k)).collect();
    let mut lineage: HashMap<i64, Vec<String>> = HashMap::new();
    for old in related.values() {
        let Some(new) = old.replaced_by else {
            continue;
        };
        let old_prefix = &old.prefix;
        if let Some(new_prefix) = related.get(&new).map(|k| &k.prefix) {
            lineage
                .entry(old.id)
                .or_default()
                .push(format!("replaced by {new_prefix}…"));
            lineage
                .entry(new)
                .or_default()
                .push(format!("replaces {old_prefix}…"));
        }
    }
    let rows = keys
        .iter()
        .map(|k| {
            let plan = plans.get(&k.plan_id);
            let used = usage.get(&k.id).map_or(0, |c| c.requests);
            // A rotated key's expiry is the end of its grace period.
            let ends = if k.replaced_by.is_some() {
                "grace until"
            } else {
                "expires"
            };
            let (status, status_note) = match k.expires_at {
                _ if !k.is_active => ("revoked", String::new()),
                Some(at) if at <= now => ("expired", when(at)),
                Some(at) => ("active", format!("{ends} {}", when(at))),
                None => ("active", String::new()),
            };
            KeyRow {
                lineage: lineage.remove(&k.id).unwrap_or_default(),
                rotated: k.replaced_by.is_some(),
                id: k.id,
                active: status == "active",
                name: k.name.clone(),
                prefix: k.prefix.clone(),
                plan: plan.map_or_else(|| "—".into(), |p| p.name.clone()),
                created: when(k.created_at),
                last_used: k.last_used_at.map_or_else(|| "never".into(), when),
                status,
                status_note,
                usage: match plan.and_then(|p| p.requests_per_month) {
                    Some(quota) => format!("{used} / {quota}"),
                    None => used.to_string(),
                },
            }
        })
        .collect();
    let has_plans = !plans.is_empty();
    let layout = Layout::tenant(&u, &state, "Keys", "keys");
    render(&KeysPage {
        layout,
        keys: rows,
        page,
        pages,
        total,
        has_plans,
    })
}

#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    plan_id: String,
    /// `YYYY-MM-DD` (end of that day, UTC) or empty.
    #[serde(default)]
    expires_on: String,
}

#[derive(Template)]
#[template(path = "key_form.html")]
struct KeyFormPage {
    layout: Layout,
    form: KeyForm,
    plans: Vec<plan::Model>,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "key_created.html")]
struct KeyCreatedPage {
    layout: Layout,
    name: String,
    key: String,
    header: String,
    example_url: Option<String>,
    /// The API the example calls, and how many the key opens.
    example_api: String,
    api_count: usize,
    tenant_name: String,
    note: Option<String>,
}

pub async fn new(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let plans = store::list_plans(&state.db, u.tenant.id).await?;
    let form = KeyForm {
        plan_id: plans.first().map(|p| p.id.to_string()).unwrap_or_default(),
        ..KeyForm::default()
    };
    let layout = Layout::tenant(&u, &state, "New key", "keys");
    render(&KeyFormPage {
        layout,
        form,
        plans,
        errors: FieldErrors::default(),
    })
}

/// End of the given day (UTC), refusing days already past.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| "Expiry must be a date like 2027-01-31.")?;
    let at = day
        .and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default())
        .and_utc();
    if at <= now {
        return Err("Expiry must be in the future.");
    }
    Ok(Some(at))
}

async fn key_created(
    u: &TenantUser,
    state: &AppState,
    name: String,
    key: String,
    note: Option<String>,
) -> Result<HttpResponse, UiError> {
    let apis = store::list_apis(&state.db, u.tenant.id).await?;
    let api = apis.iter().find(|a| a.is_active).or(apis.first());
    let header = api.map_or_else(
        || domain::header::DEFAULT_KEY_HEADER.to_owned(),
        |a| a.key_header.clone(),
    );
    let example_url = api.map(|a| format!("{}/{}/{}/", state.public_url, u.tenant.slug, a.slug));
    let layout = Layout::tenant(u, state, "Your new key", "keys");
    render_secret(&KeyCreatedPage {
        layout,
        name,
        key,
        header,
        example_url,
        example_api: api.map(|a| a.name.clone()).unwrap_or_default(),
        api_count: apis.len(),
        tenant_name: u.tenant.name.clone(),
        note,
    })
}

pub async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<KeyForm>,
) -> Result<HttpResponse, UiError> {
    let mut errors = FieldErrors::default();
    let mut problems = Problems::default();
    let name = problems
        .check("name", validate::name(&form.name))
        .unwrap_or_default();
    errors.absorb(&problems);
    let plan = match form.plan_id.parse::<i64>() {
        Ok(id) => store::get_plan(&state.db, u.tenant.id, id).await.ok(),
        Err(_) => None,
    };
    if plan.is_none() {
        errors.add("plan_id", "Choose one of your plans.");
    }
    let expires_at = parse_expiry(&form.expires_on, Utc::now())
        .map_err(|e| errors.add("expires_on", e))
        .ok()
        .flatten();
    if let (Some(plan), true) = (plan, errors.is_empty()) {
        let (_, raw) = state
            .config
            .create_api_key(u.tenant.id, plan.id, &name, expires_at)
            .await?;
        return key_created(&u, &state, name, raw.expose().to_owned(), None).await;
    }
    let plans = store::list_plans(&state.db, u.tenant.id).await?;
    let layout = Layout::tenant(&u, &state, "New key", "keys");
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &KeyFormPage {
            layout,
            form,
            plans,
            errors,
        },
    )
}

pub async fn revoke(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let k = store::get_key(&state.db, u.tenant.id, path.into_inner()).await?;
    state.config.revoke_key(u.tenant.id, k.id).await?;
    flash(
        &u.session,
        format!("Key '{}' ({}…) revoked.", k.name, k.prefix),
    );
    Ok(redirect("/keys"))
}

/// Grace periods offered when rotating, in hours (0 = the old key stops at once).
pub const GRACE_CHOICES: &[(i64, &str)] = &[
    (0, "none — revoke now"),
    (1, "1 hour"),
    (24, "24 hours"),
    (168, "7 days"),
    (720, "30 days"),
];

#[derive(Template)]
#[template(path = "key_rotate.html")]
struct RotatePage {
    layout: Layout,
    id: i64,
    name: String,
    prefix: String,
    choices: &'static [(i64, &'static str)],
}

pub async fn rotate_page(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let k = store::get_key(&state.db, u.tenant.id, path.into_inner()).await?;
    let layout = Layout::tenant(&u, &state, "Rotate key", "keys");
    render(&RotatePage {
        layout,
        id: k.id,
        name: k.name,
        prefix: k.prefix,
        choices: GRACE_CHOICES,
    })
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    grace_hours: String,
}

pub async fn rotate(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<RotateForm>,
) -> Result<HttpResponse, UiError> {
    let hours = form
        .grace_hours
        .parse::<i64>()
        .ok()
        .filter(|h| GRACE_CHOICES.iter().any(|(c, _)| c == h))
        .ok_or_else(|| UiError::Internal("invalid grace period".into()));
    let Ok(hours) = hours else {
        flash(&u.session, "Choose one of the offered grace periods.");
        return Ok(redirect(&format!("/keys/{}/rotate", path.into_inner())));
    };
    let old = store::get_key(&state.db, u.tenant.id, path.into_inner()).await?;
    let until = Utc::now() + Duration::hours(hours);
    match state.config.rotate_key(u.tenant.id, old.id, until).await {
        Ok((_, raw)) => {
            let note = if hours == 0 {
                format!("The old key {}… no longer works.", old.prefix)
            } else {
                format!(
                    "The old key {}… keeps working until {}.",
                    old.prefix,
                    until.format("%Y-%m-%d %H:%M UTC")
                )
            };
            key_created(&u, &state, old.name, raw.expose().to_owned(), Some(note)).await
        }
        Err(StoreError::InUse(msg)) => {
            flash(&u.session, format!("Not rotated: {msg}."));
            Ok(redirect("/keys"))
        }
        Err(e) => Err(e.into()),
    }
}
