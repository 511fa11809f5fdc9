//! `spawn_app`: a control plane on its own fresh database and port for each test.

use control_plane::Application;
use domain::settings::Settings;
use domain::testing::TestDb;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
}

pub async fn spawn_app_on(db: TestDb) -> TestApp {
    let settings = Settings::for_tests(db.url.clone());
    let app = Application::build(settings)
        .await
        .expect("build control plane");
    let address = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        db,
    }
}

/// One app per configured backend: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.
pub async fn spawn_apps() -> Vec<TestApp> {
    let mut apps = Vec::new();
    for db in TestDb::all().await {
        apps.push(spawn_app_on(db).await);
    }
    apps
}
