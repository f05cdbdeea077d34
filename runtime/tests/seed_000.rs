//! Seed 000 end to end: the shipped `examples/speech-tenants` policy (per-tenant request rate
//! and concurrent sessions, REST and WebSocket), served by the real `gw` in front of the mock.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Gw, GwSpec, Mock};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/speech-tenants");

fn start(mock: &Mock) -> Gw {
    let policy = std::fs::read_to_string(format!("{EXAMPLE}/gateway.gwp")).unwrap();
    let policy = policy
        .replace("127.0.0.1:8081", "{LISTEN}")
        .replace("127.0.0.1:9181", "{ADMIN}")
        .replace("http://127.0.0.1:9101", "{UPSTREAM}");
    let keys = std::fs::read_to_string(format!("{EXAMPLE}/keys/customers.keys")).unwrap();
    Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/customers.keys", keys).env("GW_ADMIN_TOKEN", "t"))
}

async fn session(gw: &Gw, key: &str) -> Result<impl StreamExt + SinkExt<Message>, u16> {
    let mut req = format!("ws://{}/v1/speech/session", gw.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_gets_its_sessions_and_no_more() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);

    // trial: one concurrent session.
    let mut first = session(&gw, "sk-trial-1").await.expect("the first session opens");
    first.send(Message::text("audio frame")).await.map_err(|_| ()).unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), first.next()).await.unwrap().is_some(), "echo through gw");
    assert_eq!(session(&gw, "sk-trial-1").await.err(), Some(429), "a second concurrent session is refused");
    // acme has 10: unaffected by trial's session.
    let _acme = session(&gw, "sk-acme-1").await.expect("another tenant's session opens");
    drop(first);
    // The slot is released when the session closes (allow the close to propagate).
    let mut reopened = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Keep within trial's 2/s rate while polling.
        if let Ok(ws) = session(&gw, "sk-trial-1").await {
            reopened = Some(ws);
            break;
        }
    }
    assert!(reopened.is_some(), "the session slot was not released after the session closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_is_held_to_its_request_rate() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::new();
    let translate =
        |key: &'static str| c.post(gw.url("/v1/speech/translate")).bearer_auth(key).body("RIFF....fake audio").send();
    // trial: 2/s with a burst of 2.
    assert_ne!(translate("sk-trial-1").await.unwrap().status(), 429);
    assert_ne!(translate("sk-trial-1").await.unwrap().status(), 429);
    let limited = translate("sk-trial-1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // acme: 100/s, many pass.
    for _ in 0..20 {
        assert_ne!(translate("sk-acme-2").await.unwrap().status(), 429);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(translate("sk-trial-1").await.unwrap().status(), 429, "trial's rate refills");
    assert_eq!(mock.requests().await.len(), 23, "refused requests never reach the scheduler");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_learns_the_keys_tenant_and_acme_gets_the_default_limits() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::new();
    // A client claiming another tenant: the scheduler is told the key's.
    let resp = c
        .post(gw.url("/v1/speech/translate"))
        .bearer_auth("sk-acme-1")
        .header("x-tenant-id", "trial")
        .body("RIFF....fake audio")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 429);
    let recs = mock.requests().await;
    assert_eq!(common::header_of(&recs[0], "x-tenant-id"), ["acme"]);

    // acme has no block of its own: `tenant *` gives it 10 sessions, and the 11th is refused.
    let mut open = vec![];
    for _ in 0..10 {
        open.push(session(&gw, "sk-acme-1").await.expect("a session within the default 10"));
    }
    assert_eq!(session(&gw, "sk-acme-2").await.err(), Some(429), "the tenant's 11th concurrent session");
}
