//! Every configuration write tells the data planes: the change event on Redis follows each write
//! the dashboard makes, whichever page made it, and key writes name the keys they touched.

use std::time::Duration;

use domain::events::Change;
use domain::testing::{TestDb, redis_url, unique_name};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::helpers::spawn_app_with;

async fn next(rx: &mut UnboundedReceiver<Change>, after: &str) -> Change {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no change event after {after}"))
        .expect("the subscription ended")
}

#[tokio::test]
async fn every_configuration_write_is_announced_to_the_data_planes() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_name("gwev");
    let (tx, mut rx) = unbounded_channel();
    {
        let (url, prefix) = (url.clone(), prefix.clone());
        tokio::spawn(async move {
            let endpoint = domain::redis_pool::Endpoint::parse(&url).unwrap();
            let _ = domain::events::listen(&endpoint, &prefix, move |c| {
                let _ = tx.send(c);
            })
            .await;
        });
    }
    // The subscription announces itself once it listens.
    assert_eq!(next(&mut rx, "subscribing").await, Change::Any);
    let app = spawn_app_with(TestDb::sqlite().await, |s| {
        s.shared.redis_url = Some(url);
        s.shared.redis_prefix = prefix;
    })
    .await;

    app.register("alice", "Acme").await;
    assert_eq!(next(&mut rx, "sign-up").await, Change::Any);
    let api = app
        .create_api("Weather", "weather", "https://weather.example.com/")
        .await;
    assert_eq!(next(&mut rx, "a new API").await, Change::Any);
    app.post("/apis", &format!("/apis/{api}/toggle"), &[]).await;
    assert_eq!(next(&mut rx, "an API disabled").await, Change::Any);
    let plan = app.create_plan("Free", "60").await;
    assert_eq!(next(&mut rx, "a new plan").await, Change::Any);
    let (key, _) = app.create_key("mobile", plan).await;
    assert_eq!(next(&mut rx, "a new key").await, Change::Keys(vec![key]));
    app.post(
        "/keys",
        &format!("/keys/{key}/rotate"),
        &[("grace_hours", "24")],
    )
    .await;
    let Change::Keys(rotated) = next(&mut rx, "a rotation").await else {
        panic!("a rotation names its keys");
    };
    assert_eq!(rotated.len(), 2);
    assert_eq!(rotated[0], key);
    app.post("/keys", &format!("/keys/{key}/revoke"), &[]).await;
    assert_eq!(next(&mut rx, "a revocation").await, Change::Keys(vec![key]));
    let routes = format!("/apis/{api}/routes");
    let form = format!("{routes}/new");
    let saved = app
        .post(
            &form,
            &routes,
            &[("path", "/v1"), ("match_kind", "prefix"), ("m_GET", "on")],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(next(&mut rx, "a new route").await, Change::Any);
    let page = app.get(&routes).await.body;
    let list = &page[page.find("<tbody>").unwrap()..];
    let at = list.find(&format!("{routes}/")).unwrap() + routes.len() + 1;
    let route: String = list[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    app.post(
        &form,
        &format!("{routes}/{route}"),
        &[("path", "/v2"), ("match_kind", "exact")],
    )
    .await;
    assert_eq!(next(&mut rx, "a route changed").await, Change::Any);
    app.post(&form, &format!("{routes}/{route}/delete"), &[])
        .await;
    assert_eq!(next(&mut rx, "a route deleted").await, Change::Any);
    app.post("/apis", &format!("/apis/{api}/delete"), &[]).await;
    assert_eq!(next(&mut rx, "an API deleted").await, Change::Any);
    // Nothing else was announced: one event per write.
    assert!(rx.try_recv().is_err());
}
