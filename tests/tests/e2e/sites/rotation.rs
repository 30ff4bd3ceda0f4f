//! Rotating a site's secret by two reloads (docs/security.md, "Rotating a secret"): nobody is
//! disconnected, both secrets work in between, and the old one stops working only for new
//! credentials.

use herald_tests::{
    ConfigFile, Position, Request, Site, Token, WS_TIMEOUT, WsClient, publish_body,
    publish_results, sites_toml, unix_now,
};

use super::support::{
    Bystanders, connect_with_token, expect_ws_refused, reload_and_wait, start_with_file, ws_url,
};

/// Publishes `data` to `channel` of `site` with `secret` as bearer; asserts a 200.
async fn publish_with(
    herald: &herald_tests::Herald,
    secret: &str,
    channel: &str,
    data: &str,
) -> Position {
    let response = Request::post(herald.addr, "/api/publish")
        .bearer(secret)
        .json_body(&publish_body(channel, data))
        .send()
        .await;
    publish_results(&response, &[channel]).remove(0)
}

/// Publishes `data` to `channel` signed with `secret`; asserts a 200.
async fn publish_signed(
    herald: &herald_tests::Herald,
    site: &Site,
    secret: &str,
    channel: &str,
    data: &str,
) -> Position {
    let response = site
        .signed_publish(
            herald.addr,
            secret,
            &unix_now().to_string(),
            &publish_body(channel, data),
        )
        .send()
        .await;
    publish_results(&response, &[channel]).remove(0)
}

/// Asserts `client` gets exactly `positions` next.
async fn expect_positions(client: &mut WsClient, what: &str, positions: &[&Position]) {
    for (i, position) in positions.iter().enumerate() {
        assert_eq!(
            &&client.next_message(WS_TIMEOUT).await.position,
            position,
            "{what}: message {i}"
        );
    }
}

#[tokio::test]
async fn rotating_a_secret_disconnects_nobody() {
    let old_secret = Site::make_secret("r", "old");
    let new_secret = Site::make_secret("r", "new");
    let old_site = Site::new("r").with_secrets(&[&old_secret]);
    let both = Site::new("r").with_secrets(&[&new_secret, &old_secret]);
    let new_site = Site::new("r").with_secrets(&[&new_secret]);
    let other = Site::new("other");
    let file = ConfigFile::new(&sites_toml("", &[&old_site, &other]));
    let herald = start_with_file(&file);
    let mut bystanders = Bystanders::connect(&herald, &[&other]).await;

    let old_token = Token::for_user("7", 3600)
        .kid(&old_site.key)
        .sign(&old_secret);
    let mut early = connect_with_token(&herald, &old_site, &old_token).await;
    early.subscribe("user:7").await;
    early.subscribe("public").await;
    let p = publish_with(&herald, &old_secret, "user:7", r#""old 1""#).await;
    expect_positions(&mut early, "before any reload", &[&p]).await;
    bystanders.publish(&herald, "before").await;

    // Step 1: add the new secret.
    file.write(&sites_toml("", &[&both, &other]));
    reload_and_wait(&herald, "ok", 1).await;
    // (Channels are not ordered among each other: one message at a time.)
    let what = "the early client after the first reload";
    let with_new = publish_with(&herald, &new_secret, "user:7", r#""new 1""#).await;
    expect_positions(&mut early, what, &[&with_new]).await;
    let signed_new = publish_signed(&herald, &both, &new_secret, "public", r#""new 2""#).await;
    expect_positions(&mut early, what, &[&signed_new]).await;
    let with_old = publish_with(&herald, &old_secret, "user:7", r#""old 2""#).await;
    expect_positions(&mut early, what, &[&with_old]).await;
    let signed_old = publish_signed(&herald, &both, &old_secret, "public", r#""old 3""#).await;
    expect_positions(&mut early, what, &[&signed_old]).await;
    let new_token = Token::for_user("7", 3600).kid(&both.key).sign(&new_secret);
    let mut late = connect_with_token(&herald, &both, &new_token).await;
    late.subscribe("user:7").await;
    let mut late_old = connect_with_token(&herald, &both, &old_token).await;
    late_old.subscribe("user:7").await;
    bystanders.publish(&herald, "between").await;

    // Step 3: drop the old secret.
    file.write(&sites_toml("", &[&new_site, &other]));
    reload_and_wait(&herald, "ok", 2).await;
    Request::post(herald.addr, "/api/publish")
        .bearer(&old_secret)
        .json_body(&publish_body("user:7", r#""refused""#))
        .send()
        .await
        .assert_error(401, "unauthorized");
    new_site
        .signed_publish(
            herald.addr,
            &old_secret,
            &unix_now().to_string(),
            &publish_body("user:7", r#""refused too""#),
        )
        .send()
        .await
        .assert_error(401, "signature_invalid");
    expect_ws_refused(
        &ws_url(&herald, &new_site, &format!("&token={old_token}")),
        "token_invalid",
        4001,
    )
    .await;

    // Open connections are not re-checked: all three still receive, the old-token ones too.
    let last = publish_with(&herald, &new_secret, "user:7", r#""new 3""#).await;
    expect_positions(&mut early, "the early client at the end", &[&last]).await;
    expect_positions(&mut late, "the client with the new token", &[&last]).await;
    expect_positions(&mut late_old, "a client with the old token", &[&last]).await;
    let last_public = publish_signed(&herald, &new_site, &new_secret, "public", r#""new 4""#).await;
    expect_positions(&mut early, "the early client at the end", &[&last_public]).await;
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
}
