//! Route table of the control plane.

mod account;
mod admin;
mod analytics;
mod api_routes;
mod apis;
mod auth;
mod clients;
mod health;
mod keys;
pub mod overview;
mod plans;
mod targets;
mod tokens;
mod webhooks;

use actix_web::web;

use crate::pages;

pub use apis::parse_api;
pub use keys::parse_expiry;
pub use plans::parse_plan;

pub fn configure(cfg: &mut web::ServiceConfig) {
    tokens::routes(cfg);
    webhooks::routes(cfg);
    cfg.route("/health", web::get().to(health::health))
        .route("/static/app.css", web::get().to(pages::css))
        .route("/static/app.js", web::get().to(pages::js))
        .route("/static/favicon.svg", web::get().to(pages::favicon))
        .route("/favicon.ico", web::get().to(pages::favicon))
        .route("/", web::get().to(auth::home))
        .route("/login", web::get().to(auth::login_page))
        .route("/login", web::post().to(auth::login))
        .route("/logout", web::post().to(auth::logout))
        .route("/register", web::get().to(auth::register_page))
        .route("/register", web::post().to(auth::register))
        .route("/dashboard", web::get().to(overview::overview))
        .route("/account/password", web::get().to(account::password_page))
        .route(
            "/account/password",
            web::post().to(account::change_password),
        )
        .route("/apis", web::get().to(apis::list))
        .route("/apis", web::post().to(apis::create))
        .route("/apis/new", web::get().to(apis::new))
        .route("/apis/{id}/edit", web::get().to(apis::edit))
        .route("/apis/{id}", web::post().to(apis::update))
        .route("/apis/{id}/toggle", web::post().to(apis::toggle))
        .route("/apis/{id}/delete", web::post().to(apis::delete))
        .route("/apis/{id}/routes", web::get().to(api_routes::list))
        .route("/apis/{id}/routes", web::post().to(api_routes::create))
        .route("/apis/{id}/routes/new", web::get().to(api_routes::new))
        .route(
            "/apis/{api_id}/routes/{id}/edit",
            web::get().to(api_routes::edit),
        )
        .route(
            "/apis/{api_id}/routes/{id}",
            web::post().to(api_routes::update),
        )
        .route(
            "/apis/{api_id}/routes/{id}/delete",
            web::post().to(api_routes::delete),
        )
        .route("/apis/{id}/targets", web::get().to(targets::list))
        .route("/apis/{id}/targets", web::post().to(targets::create))
        .route(
            "/apis/{id}/resilience",
            web::post().to(targets::save_resilience),
        )
        .route(
            "/apis/{api_id}/targets/{id}/edit",
            web::get().to(targets::edit),
        )
        .route(
            "/apis/{api_id}/targets/{id}",
            web::post().to(targets::update),
        )
        .route(
            "/apis/{api_id}/targets/{id}/delete",
            web::post().to(targets::delete),
        )
        .route(
            "/apis/{api_id}/targets/{id}/reset",
            web::post().to(targets::reset),
        )
        .route("/plans", web::get().to(plans::list))
        .route("/plans", web::post().to(plans::create))
        .route("/plans/new", web::get().to(plans::new))
        .route("/plans/time-zone", web::post().to(plans::set_time_zone))
        .route("/plans/{id}/edit", web::get().to(plans::edit))
        .route("/plans/{id}", web::post().to(plans::update))
        .route("/plans/{id}/delete", web::post().to(plans::delete))
        .route("/keys", web::get().to(keys::list))
        .route("/keys", web::post().to(keys::create))
        .route("/keys/new", web::get().to(keys::new))
        .route("/keys/{id}/revoke", web::post().to(keys::revoke))
        .route("/keys/{id}/rotate", web::get().to(keys::rotate_page))
        .route("/keys/{id}/rotate", web::post().to(keys::rotate))
        .route("/clients", web::get().to(clients::list))
        .route("/clients", web::post().to(clients::create))
        .route("/clients/new", web::get().to(clients::new))
        .route("/clients/{id}/edit", web::get().to(clients::edit))
        .route("/clients/{id}", web::post().to(clients::update))
        .route("/clients/{id}/toggle", web::post().to(clients::toggle))
        .route("/keys/{id}", web::get().to(analytics::key_page))
        .route("/analytics", web::get().to(analytics::analytics))
        .route("/logs", web::get().to(analytics::logs))
        .route("/logs/{request_id}", web::get().to(analytics::record));
    admin::configure(cfg);
}
