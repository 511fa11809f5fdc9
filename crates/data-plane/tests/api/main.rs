//! Integration tests: a real upstream, a real database (and Redis when `TEST_REDIS_URL` is set),
//! the data plane on 127.0.0.1:0.

// Test code fails loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod ceilings;
mod cli;
mod cluster;
mod db_down;
mod engines;
mod failover;
mod forwarding;
mod grpc;
mod health;
mod helpers;
mod hostile;
mod limits;
mod logs;
mod nodes;
mod outage;
mod process;
mod protocols;
mod redis_auth;
mod resilience;
mod routes;
mod ssrf;
mod streaming;
mod tls;
mod tokens;
mod upstream;
mod wire;
mod zones;
