//! The management REST API under `/api/v1`: everything the dashboard does, as JSON, for
//! automation. The OpenAPI document is generated from these handlers (utoipa) and served at
//! `/api/v1/openapi.json`, with Swagger UI at `/api/docs/`.

mod account;
pub mod admin;
pub mod analytics;
mod auth;
pub mod errors;
pub mod models;
mod quotas;
mod resources;
mod routes;
pub mod signing;
mod targets;
mod usage;
pub mod webhooks;

use actix_web::web;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Gateway management API", version = "1", description = "Manage a tenant's APIs, plans, keys and clients, and read usage. Every call but sign-up and token issuing takes `Authorization: Bearer <token>`."),
    modifiers(&Security),
    tags(
        (name = "account", description = "Sign-up and tokens"),
        (name = "plans"), (name = "apis"), (name = "routes", description = "Which paths and methods an API serves"), (name = "targets", description = "Where an API's requests go, by weight, with health checks and circuit breakers"), (name = "keys"), (name = "clients"), (name = "usage"), (name = "analytics", description = "Requests, errors and latency percentiles over time"), (name = "logs", description = "One record per request the data planes answered"), (name = "tokens", description = "JWTs minted from API keys: the tenant's signing keys, token lifetime, and a token check"), (name = "webhooks", description = "Endpoints told of quota warnings, exhausted quotas and expiring keys, signed; and their deliveries"), (name = "admin", description = "Platform administration, for admin tokens only: tenants, their state and their ceilings"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The OpenAPI document, collected from the handlers exactly as [`configure`] registers them.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa_actix_web::AppExt;
    let (_, doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(configure)
        .split_for_parts();
    doc
}

/// Registers the `/api/v1` scope with every handler; each is collected into the OpenAPI document
/// as it is registered, so the document and the routes cannot drift apart.
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(
        utoipa_actix_web::scope("/api/v1")
            .app_data(web::QueryConfig::default().error_handler(errors::query_error))
            .app_data(web::PathConfig::default().error_handler(errors::path_error))
            .service(account::signup)
            .service(account::create_token)
            .service(account::list_tokens)
            .service(account::delete_token)
            .service(resources::create_plan)
            .service(resources::list_plans)
            .service(resources::get_plan)
            .service(resources::update_plan)
            .service(resources::delete_plan)
            .service(quotas::quota_settings)
            .service(quotas::set_quota_settings)
            .service(resources::create_api)
            .service(resources::list_apis)
            .service(resources::get_api)
            .service(resources::update_api)
            .service(resources::replace_api)
            .service(resources::delete_api)
            .service(routes::create_route)
            .service(routes::list_routes)
            .service(routes::get_route)
            .service(routes::update_route)
            .service(routes::delete_route)
            .service(targets::create_target)
            .service(targets::list_targets)
            .service(targets::update_target)
            .service(targets::delete_target)
            .service(targets::reset_target)
            .service(targets::api_health)
            .service(resources::create_key)
            .service(resources::list_keys)
            .service(resources::get_key)
            .service(resources::update_key)
            .service(resources::revoke_key)
            .service(resources::rotate_key)
            .service(resources::create_client)
            .service(resources::list_clients)
            .service(resources::get_client)
            .service(resources::update_client)
            .service(resources::delete_client)
            .service(usage::usage)
            .service(analytics::analytics)
            .service(analytics::logs)
            .service(analytics::log_record)
            .service(signing::list_signing_keys)
            .service(signing::rotate_signing_key)
            .service(signing::set_token_settings)
            .service(signing::validate_token)
            .service(webhooks::create_webhook)
            .service(webhooks::list_webhooks)
            .service(webhooks::delete_webhook)
            .service(webhooks::list_deliveries)
            .service(admin::create_admin_token)
            .service(admin::list_tenants)
            .service(admin::get_tenant)
            .service(admin::update_tenant),
    );
}
