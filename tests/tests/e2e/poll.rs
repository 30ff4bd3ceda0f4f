//! HTTP long-poll (`GET`/`POST /poll`, docs/protocol.md): a first poll
//! answers its `subscribed` events and a cursor; later polls carry every
//! message once, in order, across polls, are held until one arrives or
//! their timeout passes, resume through history or say `recovered:false`;
//! every refusal with its status and code; CORS and the preflight.

use std::time::Duration;

use herald_tests::{Herald, Request, Response, Site, metric_value, sites_toml};
use serde_json::Value;

/// A poll's answer: asserts `200` and JSON, and returns the events and the
/// cursor.
fn answer(response: &Response, what: &str) -> (Vec<Value>, String) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    let json = response.json();
    let events = json["events"].as_array().cloned().unwrap_or_else(|| {
        panic!("{what}: no events array: {json}");
    });
    let cursor = json["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no cursor: {json}"))
        .to_owned();
    (events, cursor)
}

async fn poll(herald: &Herald, query: &str) -> (Vec<Value>, String) {
    let path = format!("/poll?{query}");
    answer(&Request::get(herald.addr, &path).send().await, &path)
}

/// The `(channel, offset, data)` of each event, which must all be messages.
fn messages(events: &[Value]) -> Vec<(String, u64, String)> {
    events
        .iter()
        .map(|event| {
            assert_eq!(event["type"], "message", "{event}");
            (
                event["channel"].as_str().unwrap_or_default().to_owned(),
                event["offset"].as_u64().unwrap_or_default(),
                event["data"].to_string(),
            )
        })
        .collect()
}

/// Waits until `count` polls are held (open connections on the `poll`
/// transport), so that what follows happens while they are.
async fn wait_held(herald: &Herald, count: f64) {
    for _ in 0..200 {
        let text = herald.metrics().await;
        if metric_value(&text, "herald_connections", &[("transport", "poll")]) == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{count} polls were never held at once");
}

#[tokio::test]
async fn polls_carry_every_message_once_in_order() {
    let herald = Herald::start();
    let (events, first) = poll(&herald, "channel=a&channel=b").await;
    assert_eq!(events.len(), 2, "{events:?}");
    for (event, channel) in events.iter().zip(["a", "b"]) {
        assert_eq!(event["type"], "subscribed");
        assert_eq!(event["channel"], channel);
        assert_eq!(event["recovered"], false);
    }
    assert_eq!(first.split(',').count(), 2, "{first}");

    // Published between polls: the next poll recovers them from history.
    herald.publish("a", r#"{"n":1}"#).await;
    herald.publish("b", r#"{"n":2}"#).await;
    herald.publish("a", r#"{"n":3}"#).await;
    let (events, second) = poll(&herald, &format!("channel=a&channel=b&cursor={first}")).await;
    let got = messages(&events);
    assert_eq!(
        got,
        vec![
            ("a".into(), 1, r#"{"n":1}"#.into()),
            ("a".into(), 2, r#"{"n":3}"#.into()),
            ("b".into(), 1, r#"{"n":2}"#.into()),
        ],
        "per channel in offset order"
    );
    let offsets: Vec<&str> = second
        .split(',')
        .filter_map(|p| p.split(':').nth(1))
        .collect();
    assert_eq!(offsets, ["2", "1"], "{second}");

    // Nothing new: held until its timeout, answered empty with the same cursor.
    let (events, third) = poll(
        &herald,
        &format!("channel=a&channel=b&cursor={second}&timeout=1"),
    )
    .await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(third, second);

    // The next one gets only what is new: no duplicate, no gap.
    herald.publish("b", r#"{"n":4}"#).await;
    let (events, fourth) = poll(&herald, &format!("channel=a&channel=b&cursor={third}")).await;
    assert_eq!(
        messages(&events),
        vec![("b".into(), 2, r#"{"n":4}"#.into())]
    );
    assert!(fourth.ends_with(":2"), "{fourth}");
}

#[tokio::test]
async fn a_publish_answers_a_held_poll() {
    let herald = Herald::start();
    let (_, cursor) = poll(&herald, "channel=news").await;
    let addr = herald.addr;
    // A timeout longer than the client's own wait (20 s): only the publish
    // can answer this poll with a message.
    let held = tokio::spawn(async move {
        let path = format!("/poll?channel=news&cursor={cursor}&timeout=25");
        answer(&Request::get(addr, &path).send().await, &path)
    });
    wait_held(&herald, 1.0).await;
    herald.publish("news", r#""extra""#).await;
    let (events, cursor) = held.await.expect("poll task");
    assert_eq!(
        messages(&events),
        vec![("news".into(), 1, r#""extra""#.into())]
    );
    assert!(cursor.ends_with(":1"), "{cursor}");
    wait_held(&herald, 0.0).await;
}

#[tokio::test]
async fn post_carries_the_parameters_in_a_form() {
    let herald = Herald::start();
    let channels: Vec<String> = (0..40).map(|i| format!("channel=timeline%3A{i}")).collect();
    let form = channels.join("&");
    let post = |body: String| {
        Request::post(herald.addr, "/poll")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .raw_body(body.as_bytes())
    };
    let (events, cursor) = answer(&post(form.clone()).send().await, "first POST");
    assert_eq!(events.len(), 40);
    assert_eq!(events[39]["channel"], "timeline:39");
    herald.publish("timeline:7", "7").await;
    herald.publish("timeline:39", "39").await;
    let body = format!("{form}&cursor={}", cursor.replace(',', "%2C"));
    let (events, _) = answer(&post(body).send().await, "second POST");
    assert_eq!(
        messages(&events),
        vec![
            ("timeline:7".into(), 1, "7".into()),
            ("timeline:39".into(), 1, "39".into())
        ]
    );
}

#[tokio::test]
async fn a_cursor_history_no_longer_covers_answers_not_recovered() {
    let herald = Herald::builder()
        .env("HERALD_HISTORY_SIZE", "2")
        .env("HERALD_HISTORY_MIN_AGE_SECS", "0")
        .start();
    let (_, cursor) = poll(&herald, "channel=a&channel=b").await;
    for i in 1..=5 {
        herald.publish("a", &i.to_string()).await;
    }
    herald.publish("b", "1").await;
    // Answered at once, though nothing could be replayed for `a`.
    let (events, next) = poll(
        &herald,
        &format!("channel=a&channel=b&cursor={cursor}&timeout=25"),
    )
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["type"], "subscribed", "{events:?}");
    assert_eq!(events[0]["channel"], "a");
    assert_eq!(events[0]["recovered"], false);
    assert_eq!(events[0]["offset"], 5);
    assert_eq!(messages(&events[1..]), vec![("b".into(), 1, "1".into())]);
    assert!(next.contains(":5,") && next.ends_with(":1"), "{next}");

    herald.publish("a", "6").await;
    let (events, _) = poll(&herald, &format!("channel=a&channel=b&cursor={next}")).await;
    assert_eq!(messages(&events), vec![("a".into(), 6, "6".into())]);
}

#[tokio::test]
async fn every_refusal_has_its_status_and_code_and_disturbs_no_other_poll() {
    let site = Site::new("blog")
        .allowed_origins(&["https://blog.example"])
        .limit("max_subscriptions", 3);
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&site]))
        .start();
    let key = &site.key;
    // A poll held by a good client while the bad ones are answered.
    let (_, cursor) = poll(&herald, &format!("key={key}&channel=public")).await;
    let addr = herald.addr;
    let path = format!("/poll?key={key}&channel=public&cursor={cursor}&timeout=25");
    let held = tokio::spawn(async move { answer(&Request::get(addr, &path).send().await, &path) });
    wait_held(&herald, 1.0).await;

    let get = |path: String| Request::get(herald.addr, &path);
    let cases: Vec<(Request, u16, &str)> = vec![
        (get("/poll".into()), 400, "missing_channel"),
        (get(format!("/poll?key={key}")), 400, "missing_channel"),
        (
            get(format!("/poll?key={key}&channel=bad%20name")),
            400,
            "invalid_channel",
        ),
        (
            get(format!("/poll?key={key}&channel=a&channel=a")),
            400,
            "duplicate_channel",
        ),
        (
            get(format!("/poll?key={key}&channel=public&cursor=garbage")),
            400,
            "bad_last_event_id",
        ),
        (
            get(format!("/poll?key={key}&channel=a&channel=b&cursor=1f:3")),
            400,
            "bad_last_event_id",
        ),
        (
            get(format!("/poll?key={key}&channel=public&timeout=soon")),
            400,
            "bad_request",
        ),
        (
            get(format!(
                "/poll?key={key}&channel=a&channel=b&channel=c&channel=d"
            )),
            400,
            "too_many_channels",
        ),
        (
            get("/poll?key=nobody&channel=public".into()),
            404,
            "site_unknown",
        ),
        (
            get(format!("/poll?key={key}&channel=private-room")),
            403,
            "signature_required",
        ),
        (
            get(format!("/poll?key={key}&channel=user%3A2")),
            403,
            "forbidden",
        ),
        (
            get(format!("/poll?key={key}&channel=presence-room")),
            403,
            "forbidden",
        ),
        (
            get(format!("/poll?key={key}&channel=public&token=not.a.token")),
            401,
            "token_invalid",
        ),
        (
            get(format!("/poll?key={key}&channel=public")).header("Origin", "https://evil.example"),
            403,
            "origin_not_allowed",
        ),
        (
            Request::new(
                "PUT",
                herald.addr,
                &format!("/poll?key={key}&channel=public"),
            ),
            405,
            "method_not_allowed",
        ),
        (
            Request::post(herald.addr, "/poll")
                .header("Content-Type", "text/plain")
                .raw_body(format!("key={key}&channel=public").as_bytes()),
            415,
            "unsupported_media_type",
        ),
        (
            Request::post(herald.addr, "/poll")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .raw_body(&vec![b'a'; 70 * 1024]),
            413,
            "payload_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.path());
        let response = request.send().await;
        assert_eq!(response.status, status, "{what}: {}", response.text());
        assert_eq!(response.json()["error"]["code"], code, "{what}");
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("*"),
            "{what}"
        );
        if status == 405 {
            assert_eq!(response.header("allow"), Some("GET, POST, OPTIONS"));
        }
    }

    // The allowed origin polls; the held poll gets its message.
    let response = get(format!("/poll?key={key}&channel=public"))
        .header("Origin", "https://blog.example")
        .send()
        .await;
    answer(&response, "allowed origin");
    site.publish_request(herald.addr, "public", r#"{"ok":true}"#)
        .send()
        .await;
    let (events, _) = held.await.expect("poll task");
    assert_eq!(
        messages(&events),
        vec![("public".into(), 1, r#"{"ok":true}"#.into())]
    );
}

#[tokio::test]
async fn preflight_allows_post_and_authorization() {
    let herald = Herald::start();
    let response = Request::new("OPTIONS", herald.addr, "/poll")
        .header("Origin", "https://blog.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
}

#[tokio::test]
async fn a_held_poll_is_answered_with_reconnect_advice_on_shutdown() {
    let mut herald = Herald::start();
    let (_, cursor) = poll(&herald, "channel=news").await;
    let addr = herald.addr;
    let held = tokio::spawn(async move {
        let path = format!("/poll?channel=news&cursor={cursor}&timeout=25");
        answer(&Request::get(addr, &path).send().await, &path)
    });
    wait_held(&herald, 1.0).await;
    herald.sigterm();
    let (events, next) = held.await.expect("poll task");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "reconnect", "{events:?}");
    assert_eq!(events[0]["reason"], "shutdown");
    assert!(events[0]["delay_ms"].is_u64(), "{events:?}");
    assert!(next.ends_with(":0"), "the cursor is still good: {next}");
    let status = herald.wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn poll_timeout_is_configured_and_checked() {
    let finished = Herald::builder()
        .env("HERALD_POLL_TIMEOUT_SECS", "0")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(finished.status.code(), Some(64), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("poll.timeout_secs"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn a_poll_never_waits_past_the_configured_timeout() {
    // One second: a poll asking for 25 s is answered empty after it, well
    // within the client's own 20 s wait.
    let herald = Herald::builder()
        .config_toml("[poll]\ntimeout_secs = 1\n")
        .start();
    let (_, cursor) = poll(&herald, "channel=a").await;
    let (events, next) = poll(&herald, &format!("channel=a&cursor={cursor}&timeout=25")).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(next, cursor);
}

#[tokio::test]
async fn a_held_poll_counts_against_the_sites_connection_limit() {
    let site = Site::new("small").limit("connections", 1);
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&site]))
        .start();
    let key = site.key.clone();
    let (_, cursor) = poll(&herald, &format!("key={key}&channel=public")).await;
    let addr = herald.addr;
    let path = format!("/poll?key={key}&channel=public&cursor={cursor}&timeout=25");
    let held = tokio::spawn(async move { answer(&Request::get(addr, &path).send().await, &path) });
    wait_held(&herald, 1.0).await;

    let refused = Request::get(herald.addr, &format!("/poll?key={key}&channel=public"))
        .send()
        .await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "site_connection_limit");
    assert_eq!(refused.header("retry-after"), Some("5"));

    site.publish_request(herald.addr, "public", "1")
        .send()
        .await;
    let (events, _) = held.await.expect("poll task");
    assert_eq!(messages(&events), vec![("public".into(), 1, "1".into())]);
    // Answered, the poll holds nothing: the next one is admitted.
    wait_held(&herald, 0.0).await;
    poll(&herald, &format!("key={key}&channel=public")).await;
}

#[tokio::test]
async fn a_token_that_expires_while_held_answers_token_expired() {
    let site = Site::new("blog").private();
    let herald = Herald::builder()
        .config_toml(sites_toml(
            "[connection]\nping_interval_secs = 1\n",
            &[&site],
        ))
        .start();
    let token = site.token("7", 3);
    let (_, cursor) = poll(&herald, &format!("token={token}&channel=public")).await;
    let (events, next) = poll(
        &herald,
        &format!("token={token}&channel=public&cursor={cursor}&timeout=25"),
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "error");
    assert_eq!(events[0]["code"], "token_expired");
    assert_eq!(next, cursor, "the cursor resumes with a new token");
    let refused = Request::get(
        herald.addr,
        &format!("/poll?token={token}&channel=public&cursor={cursor}"),
    )
    .send()
    .await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "token_expired");
}
