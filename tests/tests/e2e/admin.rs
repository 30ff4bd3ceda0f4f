//! The operator's JSON routes behind the console (docs/console.md): the node's figures, a test
//! publish that reaches a subscriber, a channel's history and presence, disconnecting a user's
//! connections (4011) and not another's, every refusal, and the zero-config dev site's made-up
//! secret, logged with the console's address.

use std::time::Duration;

use herald_tests::{Herald, Request, Site, WsClient, sites_toml};
use serde_json::{Value, json};

const ADMIN: &str = "an-admin-secret-for-the-console";
const WAIT: Duration = Duration::from_secs(5);

fn admin_herald(site: &Site) -> Herald {
    let top = format!("[admin]\nsecret = \"{ADMIN}\"\n");
    Herald::builder()
        .config_toml(sites_toml(&top, &[site]))
        .start()
}

async fn get(herald: &Herald, path: &str) -> Value {
    let response = Request::get(herald.addr, path).bearer(ADMIN).send().await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

async fn post(herald: &Herald, path: &str, body: &Value) -> Value {
    let response = Request::post(herald.addr, path)
        .bearer(ADMIN)
        .json_body(&body.to_string())
        .send()
        .await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

#[tokio::test]
async fn admin_stats_publish_and_channel_show_what_clients_see() {
    let site = Site::new("a");
    let herald = admin_herald(&site);
    let key = &site.key;
    let mut ws = WsClient::connect(&herald.ws_url(&format!("/ws?key={key}&channel=public"))).await;
    ws.next_json(WAIT).await;

    // A test message from the console reaches the subscriber.
    let published = post(
        &herald,
        "/api/admin/publish",
        &json!({"site": "a", "channel": "public", "data": {"text": "from the console"}}),
    )
    .await;
    let message = ws.next_message(WAIT).await;
    assert_eq!(message.data, r#"{"text":"from the console"}"#);
    assert_eq!(published["offset"], message.position.offset, "{published}");

    // The delivery is counted just after its write: the client may read it first.
    let mut stats = get(&herald, "/api/admin/stats").await;
    for _ in 0..50 {
        if stats["totals"]["delivered"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = get(&herald, "/api/admin/stats").await;
    }
    assert_eq!(stats["engine"], "memory", "{stats}");
    assert_eq!(stats["connections"]["ws"], 1, "{stats}");
    assert_eq!(stats["totals"]["published"], 1, "{stats}");
    assert_eq!(stats["totals"]["delivered"], 1, "{stats}");
    assert_eq!(stats["redis"], Value::Null);
    assert_eq!(stats["sites"][0]["id"], "a", "{stats}");
    assert_eq!(stats["sites"][0]["connections"], 1, "{stats}");
    assert_eq!(stats["sites"][0]["messages_produced"], 1, "{stats}");
    assert_eq!(
        stats["channels"][0],
        json!({"site": "a", "channel": "public", "subscribers": 1}),
        "{stats}"
    );

    let channel = get(&herald, "/api/admin/channel?site=a&channel=public&limit=5").await;
    assert_eq!(channel["subscribers"], 1, "{channel}");
    assert_eq!(
        channel["history"][0]["data"]["text"], "from the console",
        "{channel}"
    );
    assert_eq!(channel["members"], Value::Null, "not a presence channel");
    let presence = get(&herald, "/api/admin/channel?site=a&channel=presence-room").await;
    assert_eq!(presence["members"], json!([]), "{presence}");
    assert_eq!(presence["history"], json!([]), "{presence}");
}

#[tokio::test]
async fn admin_disconnect_closes_that_users_connections_only() {
    let site = Site::new("a");
    let herald = admin_herald(&site);
    let key = &site.key;
    let connect = |user: &str| {
        let token = site.token(user, 600);
        herald.ws_url(&format!("/ws?key={key}&token={token}&channel=public"))
    };
    let mut alice = Vec::new();
    for _ in 0..2 {
        let mut ws = WsClient::connect(&connect("alice")).await;
        ws.next_json(WAIT).await;
        alice.push(ws);
    }
    let mut bob = WsClient::connect(&connect("bob")).await;
    bob.next_json(WAIT).await;

    let answer = post(
        &herald,
        "/api/admin/disconnect",
        &json!({"site": "a", "user": "alice"}),
    )
    .await;
    assert_eq!(answer["disconnecting"], true, "{answer}");
    for ws in &mut alice {
        ws.expect_error("disconnected").await;
        let (code, reason) = ws.expect_close(WAIT).await;
        assert_eq!(code, 4011, "{reason}");
    }
    // Bob stays, and alice may come back: this disconnects, it does not ban.
    let published = site
        .publish_request(herald.addr, "public", r#""still here""#)
        .send()
        .await;
    assert_eq!(published.status, 200, "{}", published.text());
    assert_eq!(bob.next_message(WAIT).await.data, r#""still here""#);
    let mut again = WsClient::connect(&connect("alice")).await;
    assert_eq!(again.next_json(WAIT).await["type"], "subscribed");
}

#[tokio::test]
async fn admin_routes_refuse_what_they_cannot_do() {
    let site = Site::new("a");
    let herald = admin_herald(&site);
    let addr = herald.addr;
    // The credential.
    for path in ["/api/admin/stats", "/api/admin/channel?site=a&channel=x"] {
        Request::get(addr, path)
            .send()
            .await
            .assert_error(401, "unauthorized");
        Request::get(addr, path)
            .bearer(site.secret())
            .send()
            .await
            .assert_error(401, "unauthorized");
    }
    Request::get(addr, "/api/admin/nothing")
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(404, "not_found");
    // Methods.
    Request::post(addr, "/api/admin/stats")
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(405, "method_not_allowed");
    Request::get(addr, "/api/admin/publish")
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(405, "method_not_allowed");
    Request::post(addr, "/console")
        .send()
        .await
        .assert_error(405, "method_not_allowed");
    // Bodies and names.
    let refused = |body: &'static str| {
        Request::post(addr, "/api/admin/publish")
            .bearer(ADMIN)
            .json_body(body)
    };
    refused("{not json")
        .send()
        .await
        .assert_error(400, "bad_json");
    refused("[1]").send().await.assert_error(400, "bad_request");
    refused(r#"{"site":"a","channel":"public"}"#)
        .send()
        .await
        .assert_error(400, "bad_request");
    refused(r#"{"site":"nope","channel":"public","data":1}"#)
        .send()
        .await
        .assert_error(404, "site_unknown");
    refused(r#"{"site":"a","channel":"bad name","data":1}"#)
        .send()
        .await
        .assert_error(400, "invalid_channel");
    Request::get(addr, "/api/admin/channel?site=a")
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(400, "missing_channel");
    Request::get(addr, "/api/admin/channel?site=a&channel=x&limit=all")
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(400, "bad_request");
    Request::post(addr, "/api/admin/disconnect")
        .bearer(ADMIN)
        .json_body(r#"{"site":"a","user":""}"#)
        .send()
        .await
        .assert_error(400, "bad_request");
    // The page is there, with no Bearer needed: it holds no data.
    let page = Request::get(addr, "/console").send().await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("console"), "{}", page.text());
    drop(herald);

    // Without admin.secret, on a configured site, none of it exists.
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&site]))
        .start();
    for path in ["/console", "/api/admin/stats"] {
        Request::get(herald.addr, path)
            .bearer(ADMIN)
            .send()
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn the_dev_site_makes_up_a_console_secret_and_logs_it() {
    let herald = Herald::start();
    let mut secret = None;
    for _ in 0..50 {
        let log = herald.log();
        if let Some(at) = log.find("/console#secret=") {
            let rest = &log[at + "/console#secret=".len()..];
            secret = Some(
                rest.chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>(),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secret = secret.expect("the console's address in the log");
    assert_eq!(secret.len(), 32, "{secret}");
    let stats = Request::get(herald.addr, "/api/admin/stats")
        .bearer(&secret)
        .send()
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["sites"][0]["id"], "default");
    Request::get(herald.addr, "/api/admin/stats")
        .bearer("guess")
        .send()
        .await
        .assert_error(401, "unauthorized");
}
