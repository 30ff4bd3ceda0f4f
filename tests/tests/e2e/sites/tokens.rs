//! Client tokens and site selection: a token or key that does not hold up closes the WebSocket
//! with its 40xx code (SSE: 401/404), a good one selects its site and opens its user's channels,
//! in the query string or in `Authorization`.

use herald_tests::{
    SSE_TIMEOUT, Site, SseClient, Token, WS_TIMEOUT, WsClient, forge_claims, unix_now,
};
use serde_json::json;

use super::support::{
    Bystanders, Connect, RawWs, assert_rejections, connect_with_token, expect_sse_error,
    expect_stream, expect_ws_refused, publish, sse_with_headers, start, ws_url,
};

#[tokio::test]
async fn bad_tokens_are_refused_with_token_invalid_or_token_expired() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let now = unix_now();
    let good = Token::new("1", now + 600).kid(&a.key);
    let cases: Vec<(&str, String, &str, u16)> = vec![
        (
            "expired",
            Token::new("1", now - 10).kid(&a.key).sign(a.secret()),
            "token_expired",
            4003,
        ),
        (
            "not yet valid (nbf)",
            good.clone().claim("nbf", now + 600).sign(a.secret()),
            "token_expired",
            4003,
        ),
        (
            "signed with site b's secret",
            good.sign(b.secret()),
            "token_invalid",
            4001,
        ),
        (
            "site b's own token (kid b)",
            b.token("1", 600),
            "token_invalid",
            4001,
        ),
        (
            "sub changed without re-signing",
            forge_claims(
                &good.sign(a.secret()),
                &json!({"sub": "2", "exp": now + 600}),
            ),
            "token_invalid",
            4001,
        ),
        (
            "exp extended without re-signing",
            forge_claims(
                &Token::new("1", now - 10).kid(&a.key).sign(a.secret()),
                &json!({"sub": "1", "exp": now + 600}),
            ),
            "token_invalid",
            4001,
        ),
        (
            "alg HS512",
            good.clone().header("alg", "HS512").sign(a.secret()),
            "token_invalid",
            4001,
        ),
        (
            "alg none",
            {
                let signed = good.clone().header("alg", "none").sign(a.secret());
                // An unsecured JWT: the signature part is empty.
                format!("{}.", signed.rsplit_once('.').expect("three parts").0)
            },
            "token_invalid",
            4001,
        ),
        (
            "no sub",
            good.clone().without("sub").sign(a.secret()),
            "token_invalid",
            4001,
        ),
        (
            "no exp",
            good.clone().without("exp").sign(a.secret()),
            "token_invalid",
            4001,
        ),
        ("not a JWT", "not.a.token".to_owned(), "token_invalid", 4001),
    ];
    let mut counts: Vec<(&str, u32)> = Vec::new();
    for (what, token, code, close_code) in &cases {
        let url = ws_url(&herald, &a, &format!("&token={token}"));
        expect_ws_refused(&url, code, *close_code).await;
        expect_sse_error(
            herald.addr,
            &format!("/sse?key={}&channel=public&token={token}", a.key),
            &[],
            401,
            code,
        )
        .await;
        bystanders.publish(&herald, what).await;
        match counts.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 2,
            None => counts.push((code, 2)),
        }
    }
    bystanders.assert_received().await;
    for (code, n) in counts {
        assert_rejections(&herald, "a", code, n).await;
    }
}

#[tokio::test]
async fn unknown_or_missing_keys_are_refused_with_site_unknown() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    // An unknown key; and no key and no token while two sites are configured.
    expect_ws_refused(&herald.ws_url("/ws?key=nope"), "site_unknown", 4004).await;
    expect_ws_refused(&herald.ws_url("/ws"), "site_unknown", 4004).await;
    // A token whose kid names no site.
    let stray = Token::for_user("1", 600).kid("nope").sign(a.secret());
    expect_ws_refused(
        &herald.ws_url(&format!("/ws?token={stray}")),
        "site_unknown",
        4004,
    )
    .await;
    bystanders.publish(&herald, "between").await;
    expect_sse_error(
        herald.addr,
        "/sse?key=nope&channel=public",
        &[],
        404,
        "site_unknown",
    )
    .await;
    expect_sse_error(herald.addr, "/sse?channel=public", &[], 404, "site_unknown").await;
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "-", "site_unknown", 5).await;
}

#[tokio::test]
async fn the_only_site_needs_no_key() {
    let a = Site::new("a");
    let herald = start("", &[&a]);
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    expect_stream(&mut sse, &["public"]).await;
    let position = publish(&herald, &a, "public", r#""only site""#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, position);
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, position);
}

#[tokio::test]
async fn a_token_selects_its_site_and_opens_its_users_channels() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let token = Token::for_user("1", 600).kid(&a.key);
    let exp = token.exp();
    let token = token.sign(a.secret());

    // No key: the token's kid names the site.
    let mut by_kid = WsClient::connect(&herald.ws_url(&format!("/ws?token={token}"))).await;
    assert_eq!(
        by_kid.welcome["expires_at"], exp,
        "the welcome of a connection with a token carries its expiry: {}",
        by_kid.welcome
    );
    by_kid.subscribe("user:1").await;
    by_kid.subscribe("replies:1").await;

    // The key in the query and the token in `Authorization`.
    let mut by_header = RawWs::connect(
        &ws_url(&herald, &a, ""),
        &Connect {
            headers: vec![("Authorization", format!("Bearer {token}"))],
            source: None,
        },
    )
    .await;
    by_header.subscribe("user:1").await;

    // A numeric sub is the same user as its decimal string.
    let numeric = Token::for_user("ignored", 600)
        .kid(&a.key)
        .claim("sub", 42)
        .sign(a.secret());
    let mut numeric_ws = connect_with_token(&herald, &a, &numeric).await;
    numeric_ws.subscribe("user:42").await;

    // SSE: the token in the query, and in `Authorization`.
    let mut sse = SseClient::connect(
        herald.addr,
        &format!("/sse?channel=user:1&channel=replies:1&token={token}"),
        None,
    )
    .await;
    expect_stream(&mut sse, &["user:1", "replies:1"]).await;
    let mut sse_header = sse_with_headers(
        herald.addr,
        &format!("/sse?key={}&channel=user:1", a.key),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    expect_stream(&mut sse_header, &["user:1"]).await;

    // Site b's user 1 is somebody else: what b publishes there reaches none of these. (Channels
    // are not ordered among each other, so one message at a time.)
    publish(&herald, &b, "user:1", r#""b's user 1""#).await;
    let to_user = publish(&herald, &a, "user:1", r#""to user 1""#).await;
    assert_eq!(by_kid.next_message(WS_TIMEOUT).await.position, to_user);
    assert_eq!(by_header.next_message().await.position, to_user);
    let first = sse.next_message(SSE_TIMEOUT).await;
    assert_eq!(
        (first.channel.as_str(), &first.position),
        ("user:1", &to_user)
    );
    assert_eq!(sse_header.next_message(SSE_TIMEOUT).await.position, to_user);

    let to_replies = publish(&herald, &a, "replies:1", r#""reply to 1""#).await;
    assert_eq!(by_kid.next_message(WS_TIMEOUT).await.position, to_replies);
    let second = sse.next_message(SSE_TIMEOUT).await;
    assert_eq!(
        (second.channel.as_str(), &second.position),
        ("replies:1", &to_replies)
    );

    let to_42 = publish(&herald, &a, "user:42", r#""to user 42""#).await;
    assert_eq!(numeric_ws.next_message(WS_TIMEOUT).await.position, to_42);
}

/// A site with `token_keys`: tokens signed with the token key open the user's channels, and
/// tokens signed with the publish secret no longer do (the web servers that mint tokens need not
/// hold the secret that publishes). The same for the implicit site's `publish.token_key`.
#[tokio::test]
async fn tokens_are_signed_with_the_token_key_once_one_is_set() {
    let a = Site::new("a");
    let token_key = Site::make_secret("a", "tokens");
    let top = "";
    let toml = herald_tests::sites_toml(top, &[&a]).replace(
        "secrets = [",
        &format!("token_keys = [\"{token_key}\"]\nsecrets = ["),
    );
    let herald = herald_tests::Herald::builder().config_toml(toml).start();
    let by_key = Token::for_user("1", 600).kid(&a.key).sign(&token_key);
    let mut user = connect_with_token(&herald, &a, &by_key).await;
    user.subscribe("user:1").await;
    let by_secret = Token::for_user("1", 600).kid(&a.key).sign(a.secret());
    expect_ws_refused(
        &ws_url(&herald, &a, &format!("&token={by_secret}")),
        "token_invalid",
        4001,
    )
    .await;
    // The secret still publishes.
    let position = publish(&herald, &a, "user:1", r#""hi""#).await;
    assert_eq!(user.next_message(WS_TIMEOUT).await.position, position);

    let secret = Site::make_secret("default", "one");
    let implicit_key = Site::make_secret("default", "tokens");
    let herald = herald_tests::Herald::builder()
        .env("HERALD_PUBLISH_SECRET", &secret)
        .env("HERALD_PUBLISH_TOKEN_KEY", &implicit_key)
        .start();
    let token = Token::for_user("1", 600).kid("default").sign(&implicit_key);
    let mut user = WsClient::connect(&herald.ws_url(&format!("/ws?token={token}"))).await;
    user.subscribe("user:1").await;
    let by_secret = Token::for_user("1", 600).kid("default").sign(&secret);
    expect_ws_refused(
        &herald.ws_url(&format!("/ws?token={by_secret}")),
        "token_invalid",
        4001,
    )
    .await;
}
