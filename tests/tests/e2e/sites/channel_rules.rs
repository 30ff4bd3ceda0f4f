//! Channel rules: `user:`/`replies:` only for their user's token, `private-` only with a channel
//! signature or a grant, everything on a private site only with a token. A refused subscribe is
//! an `error` frame and the connection serves on; on SSE the whole request is a 403.

use herald_tests::{
    Herald, SSE_TIMEOUT, Site, SseClient, Token, WS_TIMEOUT, WsClient, channel_signature,
};
use serde_json::json;

use super::support::{
    Bystanders, assert_rejections, connect, connect_with_token, connection_id, expect_sse_error,
    expect_stream, expect_subscribe_refused, expect_ws_refused, publish, start, subscribe_with,
};

#[tokio::test]
async fn user_channels_open_only_to_their_users_token() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;

    bystanders.publish(&herald, "before").await;
    let mut user1 = connect_with_token(&herald, &a, &a.token("1", 600)).await;
    user1.subscribe("public").await;
    user1.subscribe("user:1").await;
    let mut anonymous = connect(&herald, &a).await;
    anonymous.subscribe("public").await;

    for channel in ["user:2", "replies:2"] {
        expect_subscribe_refused(&mut user1, channel, "forbidden").await;
    }
    for channel in ["user:1", "replies:1"] {
        expect_subscribe_refused(&mut anonymous, channel, "forbidden").await;
    }
    bystanders.publish(&herald, "during").await;

    // Both connections are still open and get their public channel ...
    for (name, client) in [("user 1", &mut user1), ("anonymous", &mut anonymous)] {
        let message = client.next_message(WS_TIMEOUT).await;
        assert_eq!(message.channel, "public", "{name}: {message:?}");
        assert!(message.data.contains(r#""during""#), "{name}: {message:?}");
    }
    // ... and their own user channel; nobody got user:2. (Channels are not ordered among each
    // other: one message at a time.)
    let to_2 = publish(&herald, &a, "user:2", r#""for user 2 only""#).await;
    assert_eq!(to_2.offset, 1);
    let to_1 = publish(&herald, &a, "user:1", r#""for user 1""#).await;
    assert_eq!(user1.next_message(WS_TIMEOUT).await.position, to_1);

    let token = a.token("1", 600);
    for path in [
        format!("/sse?key=a-key&channel=user:2&token={token}"),
        format!("/sse?key=a-key&channel=public&channel=replies:2&token={token}"),
        "/sse?key=a-key&channel=user:1".to_owned(),
    ] {
        expect_sse_error(herald.addr, &path, &[], 403, "forbidden").await;
    }
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "forbidden", 7).await;
}

#[tokio::test]
async fn private_channels_need_a_channel_signature_or_a_grant() {
    let a = Site::new("a").with_secrets(&[
        &Site::make_secret("a", "one"),
        &Site::make_secret("a", "two"),
    ]);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let mut ws = connect_with_token(&herald, &a, &a.token("1", 600)).await;
    let other = connect_with_token(&herald, &a, &a.token("1", 600)).await;
    let id = connection_id(&ws);
    let other_id = connection_id(&other);
    assert_ne!(id, other_id, "each connection has its own id");
    let channel = "private-team-7";

    let refusals = [
        (json!({}), "signature_required"),
        (json!({"signature": "00".repeat(32)}), "signature_invalid"),
        (json!({"signature": "not hex"}), "signature_invalid"),
        (
            json!({"signature": channel_signature(b.secret(), &id, channel)}),
            "signature_invalid",
        ),
        (
            json!({"signature": a.channel_signature(&other_id, channel)}),
            "signature_invalid",
        ),
        (
            json!({"signature": a.channel_signature(&id, "private-team-8")}),
            "signature_invalid",
        ),
    ];
    for (extra, code) in &refusals {
        let error = subscribe_with(&mut ws, channel, extra.clone()).await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(*code)),
            "subscribe {channel} with {extra}: {error}"
        );
        assert_eq!(error["channel"], channel, "{error}");
    }
    bystanders.publish(&herald, "during").await;

    // The right signature, by either secret of the site, admits this connection.
    let subscribed = subscribe_with(
        &mut ws,
        channel,
        json!({"signature": a.channel_signature(&id, channel)}),
    )
    .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let subscribed = subscribe_with(
        &mut ws,
        "private-team-8",
        json!({"signature": channel_signature(&a.secrets[1], &id, "private-team-8")}),
    )
    .await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let seven = publish(&herald, &a, channel, r#""team 7""#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, seven);
    let eight = publish(&herald, &a, "private-team-8", r#""team 8""#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, eight);

    // A token grant admits what it names, whatever the prefix, without a signature.
    let grant = Token::for_user("1", 600)
        .kid(&a.key)
        .channels(&["private-ops-*", "user:2"])
        .sign(a.secret());
    let mut granted = connect_with_token(&herald, &a, &grant).await;
    granted.subscribe("private-ops-1").await;
    granted.subscribe("user:2").await;
    expect_subscribe_refused(&mut granted, "private-other", "signature_required").await;

    let mut sse = SseClient::connect(
        herald.addr,
        &format!("/sse?channel=private-ops-1&channel=user:2&token={grant}"),
        None,
    )
    .await;
    expect_stream(&mut sse, &["private-ops-1", "user:2"]).await;
    let plain = a.token("1", 600);
    expect_sse_error(
        herald.addr,
        &format!("/sse?channel=private-ops-1&token={plain}"),
        &[],
        403,
        "signature_required",
    )
    .await;
    expect_sse_error(
        herald.addr,
        "/sse?key=a-key&channel=private-ops-1",
        &[],
        403,
        "signature_required",
    )
    .await;
    let ops = publish(&herald, &a, "private-ops-1", r#""ops""#).await;
    assert_eq!(granted.next_message(WS_TIMEOUT).await.position, ops);
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, ops);
    let two = publish(&herald, &a, "user:2", r#""to 2""#).await;
    assert_eq!(granted.next_message(WS_TIMEOUT).await.position, two);
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, two);

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "signature_required", 4).await;
    assert_rejections(&herald, "a", "signature_invalid", 5).await;
}

#[tokio::test]
async fn a_private_site_admits_only_clients_with_a_token() {
    let p = Site::new("p").private();
    let b = Site::new("b");
    let herald = start("", &[&p, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&p, &b]).await;
    bystanders.publish(&herald, "before").await;

    expect_ws_refused(&herald.ws_url("/ws?key=p-key"), "token_required", 4002).await;
    expect_sse_error(
        herald.addr,
        "/sse?key=p-key&channel=public",
        &[],
        401,
        "token_required",
    )
    .await;
    bystanders.publish(&herald, "during").await;

    let mut member = connect_with_token(&herald, &p, &p.token("5", 600)).await;
    member.subscribe("public").await;
    member.subscribe("user:5").await;
    expect_subscribe_refused(&mut member, "user:6", "forbidden").await;
    let mut sse = SseClient::connect(
        herald.addr,
        &format!(
            "/sse?channel=public&channel=user:5&token={}",
            p.token("5", 600)
        ),
        None,
    )
    .await;
    expect_stream(&mut sse, &["public", "user:5"]).await;

    let public = publish(&herald, &p, "public", r#""members only""#).await;
    bystanders.published(0, r#""members only""#);
    assert_eq!(member.next_message(WS_TIMEOUT).await.position, public);
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, public);
    let mine = publish(&herald, &p, "user:5", r#""for 5""#).await;
    assert_eq!(member.next_message(WS_TIMEOUT).await.position, mine);
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, mine);

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "p", "token_required", 2).await;
    assert_rejections(&herald, "p", "forbidden", 1).await;
}

#[tokio::test]
async fn the_implicit_site_with_a_publish_secret_applies_the_rules() {
    let secret = Site::make_secret("default", "one");
    let herald = Herald::builder()
        .env("HERALD_PUBLISH_SECRET", &secret)
        .start();
    let mut anonymous = WsClient::connect(&herald.ws_url("/ws")).await;
    anonymous.subscribe("public").await;
    expect_subscribe_refused(&mut anonymous, "user:1", "forbidden").await;

    let token = Token::for_user("1", 600).kid("default").sign(&secret);
    let mut user = WsClient::connect(&herald.ws_url(&format!("/ws?token={token}"))).await;
    user.subscribe("user:1").await;
    let implicit = Site::new("default").with_secrets(&[&secret]);
    let implicit = Site {
        key: "default".into(),
        ..implicit
    };
    let to_user = publish(&herald, &implicit, "user:1", r#""hello 1""#).await;
    let public = publish(&herald, &implicit, "public", r#""hello all""#).await;
    assert_eq!(user.next_message(WS_TIMEOUT).await.position, to_user);
    assert_eq!(anonymous.next_message(WS_TIMEOUT).await.position, public);
}

#[tokio::test]
async fn the_dev_site_applies_no_channel_rules() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("user:1").await;
    ws.subscribe("private-team-7").await;
    let mut sse = SseClient::connect(
        herald.addr,
        "/sse?channel=replies:1&channel=private-x",
        None,
    )
    .await;
    expect_stream(&mut sse, &["replies:1", "private-x"]).await;
    let position = herald.publish("private-team-7", "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, position);
    let position = herald.publish("private-x", "2").await;
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, position);
}
