//! The upstream address policy at connect time, on both engines: an untrusted tenant cannot make
//! the gateway connect to loopback, private or link-local addresses, to a name resolving to one,
//! or to the gateway's own services; the operator's allow list and a trusted tenant can.

use std::net::SocketAddr;

use data_plane::config::{Engine, ProxySettings};
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
use domain::testing::TestDb;

use crate::helpers::{Fixture, TestGateway, generous, seed, settings_for, spawn_gateway};
use crate::upstream::{Upstream, spawn_upstream};

struct Env {
    gw: TestGateway,
    db: TestDb,
    upstream: Upstream,
    fx: Fixture,
}

/// A gateway whose operator allows `allow`, and claims `control_plane` as its control plane's
/// address; tenant `acme`'s API points at a live upstream on loopback.
async fn env(engine: Engine, allow: &[&str], control_plane: Option<SocketAddr>) -> Env {
    let upstream = spawn_upstream().await;
    let db = TestDb::sqlite().await;
    let fx = seed(&db.db, "acme", &upstream.url("/base"), generous()).await;
    let mut settings = settings_for(&db.url, None);
    settings.shared.upstream_allow = allow
        .iter()
        .map(|a| domain::upstream_policy::parse_allow_entry(a).unwrap())
        .collect();
    if let Some(cp) = control_plane {
        // As a control plane does when it starts.
        domain::store::register_listener(&db.db, "control plane", cp)
            .await
            .unwrap();
    }
    settings.proxy = ProxySettings {
        engine,
        ..ProxySettings::default()
    };
    let gw = spawn_gateway(settings, None).await;
    Env {
        gw,
        db,
        upstream,
        fx,
    }
}

impl Env {
    async fn point_at(&self, url: &str) {
        let mut a = self.fx.api.clone().into_active_model();
        a.upstream_url = Set(url.to_owned());
        a.timeout_ms = Set(2000);
        let _: domain::entities::api::Model = a.update(&self.db.db).await.unwrap();
        crate::helpers::point_targets_at(&self.db.db, self.fx.api.id, url).await;
        self.gw.reload().await;
    }

    /// The status and error type of one call through the gateway.
    async fn call(&self) -> (u16, String) {
        let resp = self.gw.get(&self.fx.path("/x"), &self.fx.key).await;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        (
            status,
            body["error"]["type"].as_str().unwrap_or("").to_owned(),
        )
    }
}

const ENGINES: [Engine; 2] = [Engine::Fast, Engine::Hyper];

#[tokio::test]
async fn an_untrusted_tenant_cannot_reach_loopback_link_local_or_names_resolving_there() {
    for engine in ENGINES {
        let e = env(engine, &[], None).await;
        let port = e.upstream.addr.port();
        for url in [
            format!("http://127.0.0.1:{port}/base"),
            format!("http://localhost:{port}/base"),
            format!("http://[::ffff:127.0.0.1]:{port}/base"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "http://10.255.255.1:81/".to_owned(),
        ] {
            e.point_at(&url).await;
            assert_eq!(
                e.call().await,
                (502, "upstream_forbidden".to_owned()),
                "{engine:?} {url}"
            );
        }
        assert_eq!(
            e.upstream.count(),
            0,
            "{engine:?}: the upstream was reached"
        );
    }
}

#[tokio::test]
async fn the_operators_allow_list_and_a_trusted_tenant_open_loopback_but_never_metadata() {
    for engine in ENGINES {
        // The allow list opens loopback, names included.
        let e = env(engine, &["127.0.0.0/8"], None).await;
        let port = e.upstream.addr.port();
        for url in [
            format!("http://127.0.0.1:{port}/base"),
            format!("http://localhost:{port}/base"),
        ] {
            e.point_at(&url).await;
            assert_eq!(e.call().await.0, 200, "{engine:?} {url}");
        }
        // Link-local stays refused even when the list covers everything.
        let e = env(engine, &["0.0.0.0/0"], None).await;
        e.point_at("http://169.254.169.254/").await;
        assert_eq!(e.call().await, (502, "upstream_forbidden".to_owned()));

        // A trusted tenant may use loopback without the list; another tenant on the same address
        // still may not, even with the trusted tenant's connections pooled.
        let e = env(engine, &[], None).await;
        let other = seed(&e.db.db, "bob", &e.upstream.url("/bob"), generous()).await;
        let mut t = e.fx.tenant.clone().into_active_model();
        t.trusted_upstreams = Set(true);
        let _: domain::entities::tenant::Model = t.update(&e.db.db).await.unwrap();
        domain::store::bump_config_version(&e.db.db).await.unwrap();
        e.gw.reload().await;
        for _ in 0..3 {
            let (status, kind) = e.call().await;
            assert_eq!(status, 200, "{engine:?}: trusted: {kind}");
            let resp = e.gw.get(&other.path("/x"), &other.key).await;
            assert_eq!(resp.status(), 502, "{engine:?}: untrusted bob");
        }
        assert!(
            e.upstream
                .seen
                .lock()
                .unwrap()
                .iter()
                .all(|s| s.uri.starts_with("/base"))
        );
    }
}

#[tokio::test]
async fn the_gateways_own_control_plane_is_refused_even_when_loopback_is_allowed() {
    // A listener standing in for the control plane (its port is what the settings name).
    let cp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp.local_addr().unwrap();
    for engine in ENGINES {
        let e = env(engine, &["127.0.0.0/8"], Some(cp_addr)).await;
        for url in [
            format!("http://127.0.0.1:{}/api/v1/openapi.json", cp_addr.port()),
            format!("http://localhost:{}/", cp_addr.port()),
            // The data plane itself.
            format!(
                "http://{}/health",
                e.gw.address.trim_start_matches("http://")
            ),
        ] {
            e.point_at(&url).await;
            assert_eq!(
                e.call().await,
                (502, "upstream_forbidden".to_owned()),
                "{engine:?} {url}"
            );
        }
    }
}
