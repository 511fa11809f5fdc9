//! Integration tests: a real control plane on 127.0.0.1:0 per test, over real databases.

// Test code fails loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod admin;
mod analytics;
mod cli;
mod dashboard;
mod db_down;
mod events;
mod health;
mod helpers;
mod management;
mod protocols;
mod quotas;
mod security;
mod tls;
mod tokens;
mod webhooks;
