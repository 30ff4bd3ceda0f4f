//! The expander's bound (`timeline.expander_queue_per_site`): a site that floods it loses shard
//! messages on this node, and its affected timelines are told `recovered: false` instead of
//! silently skipping them (timeline offsets skip by design, so clients cannot see the gap); the
//! other sites' deliveries are not dropped for it.

use std::time::{Duration, Instant};

use herald_tests::{
    Delivery, Herald, Request, SSE_TIMEOUT, Site, SseClient, WS_TIMEOUT, WsClient, metric_value,
    sites_toml,
};
use serde_json::json;

/// Generous bound for a condition to come true on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

async fn user_client(herald: &Herald, site: &Site, user: &str) -> WsClient {
    let url = herald.ws_url(&format!(
        "/ws?key={}&token={}",
        site.key,
        site.token(user, 600)
    ));
    let mut ws = WsClient::connect(&url).await;
    ws.subscribe(&format!("user:{user}")).await;
    ws
}

#[tokio::test]
async fn a_flooded_expander_tells_the_timelines_it_dropped_and_spares_other_sites() {
    let a = Site::new("a");
    let b = Site::new("b");
    // One shard, and one shard message of a site may wait: the flood below overflows it.
    let top = "[timeline]\nshards = 1\nexpander_queue_per_site = 1\n";
    let herald = Herald::builder()
        .config_toml(sites_toml(top, &[&a, &b]))
        .start();
    let mut a1 = user_client(&herald, &a, "1").await;
    let mut b1 = user_client(&herald, &b, "1").await;
    let sse_path = format!(
        "/sse?key={}&channel=user:1&token={}",
        a.key,
        a.token("1", 600)
    );
    let mut a1_sse = SseClient::connect(herald.addr, &sse_path, None).await;
    a1_sse.assert_stream();
    a1_sse.expect_subscribed("user:1").await;

    // A big delivery keeps the expander busy (200,000 recipients in its one shard message),
    // then one publish to 50 of site a's timelines makes 50 shard messages at once: all but the
    // first wait behind it and overflow the bound. user:1 is the last of them.
    let crowd = Delivery::user(1000..201_000, r#""crowd""#).bearer(a.secret());
    assert_eq!(crowd.send(herald.addr).await.status, 200);
    let channels: Vec<String> = (2..=50)
        .chain([1])
        .map(|user| format!("user:{user}"))
        .collect();
    let body = json!({"channels": channels, "data": "flood"}).to_string();
    let flood = Request::post(herald.addr, "/api/publish")
        .bearer(a.secret())
        .json_body(&body)
        .send()
        .await;
    assert_eq!(flood.status, 200, "{}", flood.text());
    // Site b delivers while a overflows: its own bound is untouched.
    let to_b = Delivery::user([1], r#""for b""#).bearer(b.secret());
    assert_eq!(to_b.send(herald.addr).await.status, 200);
    assert_eq!(b1.next_message(WS_TIMEOUT).await.data, r#""for b""#);

    let metrics = herald.metrics().await;
    let dropped = metric_value(&metrics, "herald_timeline_expander_dropped_total", &[]);
    assert!(dropped >= 1.0, "the flood overflowed nothing:\n{metrics}");

    // user:1's message was dropped here: its client is told so, never left with a silent gap.
    let deadline = Instant::now() + WAIT;
    let gap = loop {
        assert!(Instant::now() < deadline, "no recovered: false for user:1");
        let frame = a1.next_json(WS_TIMEOUT).await;
        if frame["type"] == "subscribed" {
            break frame;
        }
        assert_eq!(frame["type"], "message", "{frame}");
        assert_ne!(
            frame["data"],
            json!("flood"),
            "user:1's message was not dropped"
        );
    };
    assert_eq!(gap["channel"], "user:1", "{gap}");
    assert_eq!(gap["recovered"], false, "{gap}");
    // The same on SSE, whose cursor moves to the gap's position.
    let sse_gap = loop {
        assert!(
            Instant::now() < deadline,
            "no recovered: false for user:1 on SSE"
        );
        let event = a1_sse.next_event(SSE_TIMEOUT).await;
        if event.event == "subscribed" {
            break event;
        }
        assert_eq!(event.event, "message", "{event:?}");
    };
    let data = sse_gap.json();
    assert_eq!(data["recovered"], false, "{data}");
    assert_eq!(data["offset"], gap["offset"], "{data} and {gap}");
    assert_eq!(
        sse_gap.id,
        format!("{}:{}", gap["epoch"].as_str().unwrap(), gap["offset"]),
        "the cursor names the gap's position"
    );
    let metrics = herald.metrics().await;
    assert!(metric_value(&metrics, "herald_timeline_expander_gaps_total", &[]) >= 1.0);

    // Once told, the site's deliveries are expanded again.
    let after = Delivery::user([1], r#""after""#).bearer(a.secret());
    assert_eq!(after.send(herald.addr).await.status, 200);
    let next = a1.next_message(WS_TIMEOUT).await;
    assert_eq!(next.data, r#""after""#);
    assert!(
        next.position.offset > gap["offset"].as_u64().unwrap(),
        "{next:?} after {gap}"
    );
}
