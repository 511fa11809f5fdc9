use crate::helpers::spawn_apps;

#[tokio::test]
async fn health_reports_the_database() {
    for app in spawn_apps().await {
        let resp = app.client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["database"], "up", "{:?}", app.db.backend);
    }
}

#[tokio::test]
async fn migrate_creates_and_migrates_the_database_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fresh.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .arg("migrate")
        .env("GATEWAY_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrated"));
    let db = domain::db::connect_existing(&url).await.unwrap();
    assert!(domain::db::schema_ready(&db).await);
}
