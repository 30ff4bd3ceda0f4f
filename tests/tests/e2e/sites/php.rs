//! The PHP example of docs/security.md (`docs/examples/php/`) against a live Herald: its tokens
//! connect, its signed publishes are accepted and delivered, its channel signatures admit.
//!
//! `php` comes from `scripts/install-test-deps.sh` (php-cli); without it this test fails rather
//! than skips, so that a broken set-up is not mistaken for a passing example.

use std::path::PathBuf;

use herald_tests::{Position, SSE_TIMEOUT, Site, SseClient, WS_TIMEOUT, WsClient};
use serde_json::{Value, json};

use super::support::{connection_id, expect_stream, start, subscribe_with};

/// `docs/examples/php/cli.php` in this checkout.
fn cli_php() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/php/cli.php");
    assert!(path.is_file(), "no PHP example at {}", path.display());
    path
}

/// Runs `php cli.php ARGS...` and returns its stdout, trimmed; panics if it fails.
async fn php(args: &[&str]) -> String {
    let output = tokio::process::Command::new("php")
        .arg(cli_php())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run php ({e}): scripts/install-test-deps.sh installs php-cli")
        });
    assert!(
        output.status.success(),
        "php cli.php {args:?}: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .trim()
        .to_owned()
}

/// Publishes with `herald_publish` and returns the position from Herald's answer.
async fn php_publish(
    herald: &herald_tests::Herald,
    site: &Site,
    channel: &str,
    data: &Value,
) -> Position {
    php_publish_keyed(herald, site, channel, data, "").await
}

/// Publishes with `herald_publish` and an `Idempotency-Key` (none when empty).
async fn php_publish_keyed(
    herald: &herald_tests::Herald,
    site: &Site,
    channel: &str,
    data: &Value,
    key: &str,
) -> Position {
    let base = format!("http://{}", herald.addr);
    let data = data.to_string();
    let mut args = vec!["publish", &base, &site.key, site.secret(), channel, &data];
    if !key.is_empty() {
        args.push(key);
    }
    let answer = php(&args).await;
    let answer: Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("PHP printed no JSON ({e}): {answer}"));
    let result = &answer["results"][0];
    assert_eq!(
        result["channel"], channel,
        "Herald's answer to the PHP publish: {answer}"
    );
    Position::from_json(result)
}

#[tokio::test]
async fn the_php_example_mints_tokens_publishes_and_signs_channels() {
    // Two sites, so that the token's kid has to pick the right one.
    let other = Site::new("other");
    let site = Site::new("social");
    let herald = start("", &[&other, &site]);

    let token = php(&["token", &site.key, site.secret(), "42", "600"]).await;
    let mut ws = WsClient::connect(&herald.ws_url(&format!("/ws?token={token}"))).await;
    ws.subscribe("user:42").await;

    let data = json!({"text": "from PHP", "id": 7});
    let position = php_publish(&herald, &site, "user:42", &data).await;
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(message.position, position);
    assert_eq!(
        serde_json::from_str::<Value>(&message.data).expect("JSON"),
        data
    );

    // With an Idempotency-Key, which the request's signature covers.
    let keyed = json!({"text": "keyed"});
    let position = php_publish_keyed(&herald, &site, "user:42", &keyed, "php-1").await;
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(message.position, position);

    // A channel signature for this connection.
    let channel = "private-team-7";
    let signature = php(&["sign-channel", site.secret(), &connection_id(&ws), channel]).await;
    let subscribed = subscribe_with(&mut ws, channel, json!({"signature": signature})).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let team = json!({"team": 7});
    let position = php_publish(&herald, &site, channel, &team).await;
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(message.position, position);
    assert_eq!(
        serde_json::from_str::<Value>(&message.data).expect("JSON"),
        team
    );

    // A token with grants, on SSE.
    let granted = php(&[
        "token",
        &site.key,
        site.secret(),
        "42",
        "600",
        "private-ops-*",
    ])
    .await;
    let mut sse = SseClient::connect(
        herald.addr,
        &format!("/sse?channel=private-ops-1&token={granted}"),
        None,
    )
    .await;
    expect_stream(&mut sse, &["private-ops-1"]).await;
    let ops = json!({"ops": true});
    let position = php_publish(&herald, &site, "private-ops-1", &ops).await;
    let message = sse.next_message(SSE_TIMEOUT).await;
    assert_eq!(message.position, position);
    assert_eq!(
        serde_json::from_str::<Value>(&message.data).expect("JSON"),
        ops
    );
}
