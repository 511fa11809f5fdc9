//! A data plane on its own fresh database and port for each test.

use data_plane::Application;
use data_plane::startup::ShutdownHandle;
use domain::settings::Settings;
use domain::testing::TestDb;

pub struct TestGateway {
    pub address: String,
    pub client: reqwest::Client,
    pub shutdown: ShutdownHandle,
    pub db: TestDb,
}

pub async fn spawn_gateway() -> TestGateway {
    let db = TestDb::sqlite().await;
    let app = Application::build(Settings::for_tests(db.url.clone()))
        .await
        .expect("build data plane");
    let address = format!("http://{}", app.local_addr());
    let shutdown = app.shutdown_handle();
    tokio::spawn(app.run_until_stopped());
    TestGateway {
        address,
        client: reqwest::Client::new(),
        shutdown,
        db,
    }
}
