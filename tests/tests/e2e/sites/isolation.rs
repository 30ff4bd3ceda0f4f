//! Isolation: the same channel name on two sites is two channels, with their own offsets,
//! history and subscribers, on the memory engine and across Redis nodes.

use herald_tests::{Herald, Redis, SSE_TIMEOUT, Site, SseClient, WS_TIMEOUT, WsClient, sites_toml};

use super::support::{connect, connect_with_token, expect_stream, history, publish, start};

/// Subscribes `client` to `channel` and checks the channel is new (offset 0) on its site.
async fn subscribe_new(client: &mut WsClient, channel: &str) {
    let subscribed = client.subscribe(channel).await;
    assert_eq!(subscribed["offset"], 0, "{subscribed}");
}

#[tokio::test]
async fn the_same_channel_on_two_sites_is_two_channels() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut a_public = connect(&herald, &a).await;
    let mut a_user = connect_with_token(&herald, &a, &a.token("1", 600)).await;
    let mut b_public = connect(&herald, &b).await;
    let mut b_user = connect_with_token(&herald, &b, &b.token("1", 600)).await;
    subscribe_new(&mut a_public, "public").await;
    subscribe_new(&mut a_user, "user:1").await;
    subscribe_new(&mut b_public, "public").await;
    subscribe_new(&mut b_user, "user:1").await;
    let mut a_sse = SseClient::connect(herald.addr, "/sse?key=a-key&channel=public", None).await;
    expect_stream(&mut a_sse, &["public"]).await;
    let mut b_sse = SseClient::connect(herald.addr, "/sse?key=b-key&channel=public", None).await;
    expect_stream(&mut b_sse, &["public"]).await;

    // Site a publishes first; had b's subscribers got it, it would come before b's own message.
    let a1 = publish(&herald, &a, "public", r#""a public""#).await;
    let a2 = publish(&herald, &a, "user:1", r#""a user 1""#).await;
    let b1 = publish(&herald, &b, "public", r#""b public""#).await;
    let b2 = publish(&herald, &b, "user:1", r#""b user 1""#).await;
    assert_eq!(
        (a1.offset, a2.offset, b1.offset, b2.offset),
        (1, 1, 1, 1),
        "each site's channels count from 1"
    );
    assert_eq!(
        a_public.next_message(WS_TIMEOUT).await.data,
        r#""a public""#
    );
    assert_eq!(a_user.next_message(WS_TIMEOUT).await.data, r#""a user 1""#);
    assert_eq!(a_sse.next_message(SSE_TIMEOUT).await.data, r#""a public""#);
    assert_eq!(
        b_public.next_message(WS_TIMEOUT).await.data,
        r#""b public""#
    );
    assert_eq!(b_user.next_message(WS_TIMEOUT).await.data, r#""b user 1""#);
    assert_eq!(b_sse.next_message(SSE_TIMEOUT).await.data, r#""b public""#);

    let a_history = history(&herald, &a, "public").await;
    assert_eq!(
        a_history["messages"].as_array().map(Vec::len),
        Some(1),
        "{a_history}"
    );
    assert_eq!(a_history["messages"][0]["data"], "a public", "{a_history}");
    let b_history = history(&herald, &b, "user:1").await;
    assert_eq!(
        b_history["messages"].as_array().map(Vec::len),
        Some(1),
        "{b_history}"
    );
    assert_eq!(b_history["messages"][0]["data"], "b user 1", "{b_history}");
}

#[tokio::test]
async fn sites_stay_apart_across_redis_nodes() {
    let redis = Redis::start();
    let a = Site::new("a");
    let b = Site::new("b");
    let node = || -> Herald {
        Herald::builder()
            .arg("--engine")
            .arg("redis")
            .arg("--redis-url")
            .arg(redis.url())
            .config_toml(sites_toml("", &[&a, &b]))
            .start()
    };
    let (one, two) = (node(), node());
    let mut a_one = connect(&one, &a).await;
    let mut b_one = connect(&one, &b).await;
    let mut a_two = connect(&two, &a).await;
    let mut b_two = connect(&two, &b).await;
    let mut a_user_two = connect_with_token(&two, &a, &a.token("1", 600)).await;
    let mut b_user_one = connect_with_token(&one, &b, &b.token("1", 600)).await;
    for client in [&mut a_one, &mut b_one, &mut a_two, &mut b_two] {
        subscribe_new(client, "public").await;
    }
    subscribe_new(&mut a_user_two, "user:1").await;
    subscribe_new(&mut b_user_one, "user:1").await;

    let a1 = publish(&one, &a, "public", r#""a 1""#).await;
    let au = publish(&one, &a, "user:1", r#""a user""#).await;
    let b1 = publish(&two, &b, "public", r#""b 1""#).await;
    let bu = publish(&two, &b, "user:1", r#""b user""#).await;
    let a2 = publish(&two, &a, "public", r#""a 2""#).await;
    assert_eq!((a1.offset, b1.offset, a2.offset), (1, 1, 2));
    for (name, client) in [("a on node one", &mut a_one), ("a on node two", &mut a_two)] {
        assert_eq!(
            client.next_message(WS_TIMEOUT).await.data,
            r#""a 1""#,
            "{name}"
        );
        assert_eq!(
            client.next_message(WS_TIMEOUT).await.data,
            r#""a 2""#,
            "{name}"
        );
    }
    for (name, client) in [("b on node one", &mut b_one), ("b on node two", &mut b_two)] {
        assert_eq!(
            client.next_message(WS_TIMEOUT).await.position,
            b1,
            "{name}: b's own message, not a's"
        );
    }
    assert_eq!(a_user_two.next_message(WS_TIMEOUT).await.position, au);
    assert_eq!(b_user_one.next_message(WS_TIMEOUT).await.position, bu);

    // One more on b proves nothing of a's second message reached b's subscribers in between.
    let b2 = publish(&one, &b, "public", r#""b 2""#).await;
    for client in [&mut b_one, &mut b_two] {
        assert_eq!(client.next_message(WS_TIMEOUT).await.position, b2);
    }
    let a_history = history(&two, &a, "public").await;
    assert_eq!(
        a_history["messages"].as_array().map(Vec::len),
        Some(2),
        "{a_history}"
    );
}
