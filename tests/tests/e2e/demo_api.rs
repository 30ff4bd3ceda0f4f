//! The live demo's microblog routes (`/demo/…`, zero-config only): a notice goes to `public`, to
//! its author's `notices-<nick>`, to each `tag-<tag>`, and to the home timelines (`user:<nick>`)
//! of its author and followers, as real WebSocket subscribers see; unfollowing stops the homes;
//! bad input gets its 400, other methods 405; a configured Herald serves no demo.

use herald_tests::{Herald, Request, Site, WS_TIMEOUT, WsClient, sites_toml};
use serde_json::{Value, json};

async fn subscribed(herald: &Herald, channel: &str) -> WsClient {
    let mut client = WsClient::connect(&herald.ws_url("/ws")).await;
    client.subscribe(channel).await;
    client
}

async fn post(herald: &Herald, path: &str, body: Value) -> Value {
    let answer = Request::post(herald.addr, path)
        .json_body(&body.to_string())
        .send()
        .await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.json()
}

async fn notice_text(client: &mut WsClient) -> String {
    let message = client.next_message(WS_TIMEOUT).await;
    let notice: Value = serde_json::from_str(&message.data).expect("a notice");
    notice["text"].as_str().expect("text").to_owned()
}

#[tokio::test]
async fn a_notice_reaches_every_timeline_it_belongs_to() {
    let herald = Herald::start();
    let mut public = subscribed(&herald, "public").await;
    let mut by_ann = subscribed(&herald, "notices-ann").await;
    let mut tag = subscribed(&herald, "tag-herald").await;
    let mut bob_home = subscribed(&herald, "user:bob").await;
    let mut carl_home = subscribed(&herald, "user:carl").await;

    let followed = post(
        &herald,
        "/demo/follow",
        json!({"nick":"bob","target":"ann"}),
    )
    .await;
    assert_eq!(followed["following"], json!(["ann"]));
    let posted = post(
        &herald,
        "/demo/notices",
        json!({"nick":"ann","text":"hello #Herald"}),
    )
    .await;
    assert_eq!(posted["notice"]["tags"], json!(["herald"]));
    for client in [&mut public, &mut by_ann, &mut tag, &mut bob_home] {
        assert_eq!(notice_text(client).await, "hello #Herald");
    }
    // Carl follows nobody: his home's next notice is his own.
    post(
        &herald,
        "/demo/notices",
        json!({"nick":"carl","text":"mine"}),
    )
    .await;
    assert_eq!(notice_text(&mut carl_home).await, "mine");

    // Bob unfollows: ann's next notice skips his home, whose next is his own.
    post(
        &herald,
        "/demo/follow",
        json!({"nick":"bob","target":"ann","follow":false}),
    )
    .await;
    post(
        &herald,
        "/demo/notices",
        json!({"nick":"ann","text":"not for bob"}),
    )
    .await;
    post(
        &herald,
        "/demo/notices",
        json!({"nick":"bob","text":"bob's own"}),
    )
    .await;
    assert_eq!(notice_text(&mut bob_home).await, "bob's own");

    let state = Request::get(herald.addr, "/demo/state?nick=bob")
        .send()
        .await;
    assert_eq!(state.status, 200, "{}", state.text());
    let state = state.json();
    assert_eq!(state["following"], json!([]));
    assert_eq!(state["notices"][0]["text"], "bob's own", "newest first");
    assert!(state["users"].as_array().expect("users").len() >= 3);
}

#[tokio::test]
async fn bad_demo_requests_get_their_errors() {
    let herald = Herald::start();
    let refusals = [
        (
            "/demo/notices",
            r#"{"nick":"Ann","text":"x"}"#.to_string(),
            "bad_request",
        ),
        (
            "/demo/notices",
            r#"{"nick":"ann","text":"  "}"#.to_string(),
            "bad_request",
        ),
        (
            "/demo/notices",
            json!({"nick":"ann","text":"x".repeat(281)}).to_string(),
            "bad_request",
        ),
        ("/demo/notices", "not json".to_string(), "bad_json"),
        (
            "/demo/follow",
            r#"{"nick":"ann","target":"ann"}"#.to_string(),
            "bad_request",
        ),
    ];
    for (path, body, code) in refusals {
        Request::post(herald.addr, path)
            .json_body(&body)
            .send()
            .await
            .assert_error(400, code);
    }
    Request::get(herald.addr, "/demo/state?nick=a%20b")
        .send()
        .await
        .assert_error(400, "bad_request");
    Request::get(herald.addr, "/demo/notices")
        .send()
        .await
        .assert_error(405, "method_not_allowed");
    Request::get(herald.addr, "/demo/nothing")
        .send()
        .await
        .assert_error(404, "not_found");
    // The demo still works after all that.
    post(
        &herald,
        "/demo/notices",
        json!({"nick":"ann","text":"fine"}),
    )
    .await;

    let configured = Herald::builder()
        .config_toml(sites_toml("", &[&Site::new("blog")]))
        .start();
    Request::get(configured.addr, "/demo/state?nick=ann")
        .send()
        .await
        .assert_error(404, "not_found");
}
