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
