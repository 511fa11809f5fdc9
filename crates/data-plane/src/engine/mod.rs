//! The engines: they read requests off the client connection and write answers back, and call the
//! pipeline's phases (`crate::pipeline`) in between. `fast` serves ordinary HTTP/1.1 requests
//! straight off the socket; `hyper` serves the rest (and everything with `GATEWAY_ENGINE=hyper`).

pub mod fast;
pub mod hyper;
pub mod websocket;
