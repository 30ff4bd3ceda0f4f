//! Every refusal of `POST /api/deliver` (docs/timelines.md): the documented status and code,
//! nothing delivered to anyone, and everyone else served on; and the shard channels are out of
//! clients' and publishers' reach.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use herald_tests::{
    DEFAULT_SHARDS, DEFAULT_SITE, Delivery, Herald, Request, Response, SseClient, Token,
    WS_TIMEOUT, WsClient, WsEvent, publish_body, shard_of, signed_request, unix_now,
};
use serde_json::{Value, json};

use super::support::{Bystander, POLL, Subscriber, connect_all, expect_all, notice, sentinel};

/// The most a test waits for the publish bucket to refill a token (at 1 per second).
const REFILL_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/deliver` with `body` sent byte for byte and, if given, an `Idempotency-Key`.
async fn deliver_raw(addr: SocketAddr, body: &str, key: Option<&str>) -> Response {
    let mut request = Request::post(addr, "/api/deliver").json_body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await
}

/// Asserts a refusal and that its message is there; returns the message.
fn assert_refused(response: &Response, status: u16, code: &str, what: &str) -> String {
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (status, code),
        "{what}: {}",
        response.text()
    );
    response.json()["error"]["message"]
        .as_str()
        .expect("checked by error_code")
        .to_owned()
}

/// The `user:` subscribers of `ids` on `herald`.
async fn subscribers(herald: &Herald, ids: &[&str]) -> Vec<Subscriber> {
    connect_all(
        ids.iter()
            .map(|id| (herald.ws_url("/ws"), format!("user:{id}"), (*id).to_owned()))
            .collect(),
    )
    .await
}

#[tokio::test]
async fn malformed_deliveries_are_refused_with_400_and_deliver_nothing() {
    let herald = Herald::start();
    let long_id = "i".repeat(100);
    let mut watched = subscribers(&herald, &["1", "2", &long_id]).await;
    let mut bystander = Bystander::connect(&herald).await;
    bystander.publish(&herald, "before").await;

    let cases: &[(&str, &str, &str)] = &[
        (
            "truncated JSON",
            r#"{"timeline":"user","recipients":[1,2],"data":"#,
            "bad_json",
        ),
        ("not JSON", "timeline=user&recipients=1", "bad_json"),
        ("an empty body", "", "bad_json"),
        ("not an object", "[1,2]", "bad_request"),
        (
            "no timeline",
            r#"{"recipients":[1,2],"data":1}"#,
            "bad_request",
        ),
        (
            "an unknown timeline",
            r#"{"timeline":"home","recipients":[1,2],"data":1}"#,
            "bad_request",
        ),
        (
            "a timeline that is not a string",
            r#"{"timeline":1,"recipients":[1,2],"data":1}"#,
            "bad_request",
        ),
        (
            "no recipients",
            r#"{"timeline":"user","data":1}"#,
            "bad_request",
        ),
        (
            "empty recipients",
            r#"{"timeline":"user","recipients":[],"data":1}"#,
            "bad_request",
        ),
        (
            "no data",
            r#"{"timeline":"user","recipients":[1,2]}"#,
            "bad_request",
        ),
    ];
    for (what, body, code) in cases {
        let response = deliver_raw(herald.addr, body, None).await;
        assert_refused(&response, 400, code, what);
    }
    bystander.publish(&herald, "during").await;

    // A bad id among good ones: refused whole, and the message names it.
    let too_long = "i".repeat(101);
    let bad_ids: &[(&str, Value)] = &[
        ("a space", json!("a b")),
        ("a slash", json!("a/b")),
        ("an empty id", json!("")),
        ("101 characters", json!(too_long)),
        ("a non-ASCII letter", json!("zoë")),
        ("a line break", json!("a\nb")),
        ("the internal shard prefix", json!("~t:1")),
    ];
    for (what, id) in bad_ids {
        let delivery = Delivery::user([1, 2], &notice(1)).values([id.clone()]);
        let response = delivery.send(herald.addr).await;
        let message = assert_refused(&response, 400, "invalid_channel", what);
        let shown = id.as_str().expect("string ids");
        if !shown.is_empty() && !shown.contains('\n') {
            assert!(
                message.contains(shown),
                "{what}: the message says which id: {message}"
            );
        }
    }
    bystander.publish(&herald, "after").await;
    bystander.assert_received().await;

    // 100 characters is still an id; nothing refused above reached anyone.
    let sentinel = sentinel("after the refusals");
    let answer = herald
        .deliver(&Delivery::user([1, 2], &sentinel).names([&long_id]))
        .await;
    assert_eq!(answer.recipients, 3);
    expect_all(
        &mut watched,
        &sentinel,
        "the first delivery that was accepted",
    )
    .await;
}

#[tokio::test]
async fn bad_idempotency_keys_are_refused_with_400() {
    let herald = Herald::start();
    let mut watched = subscribers(&herald, &["1"]).await;
    let body = Delivery::user([1], &notice(2)).body();
    let bad_keys: &[(&str, String)] = &[
        ("an empty key", String::new()),
        ("129 characters", "k".repeat(129)),
        ("a non-ASCII key", "clé-1".to_owned()),
        ("a space inside", "notice 1".to_owned()),
    ];
    for (what, key) in bad_keys {
        let response = deliver_raw(herald.addr, &body, Some(key)).await;
        assert_refused(&response, 400, "bad_request", what);
    }
    let mut accepted = Vec::new();
    for key in [
        "k".repeat(128),
        "notice-1234/1".to_owned(),
        "!~#$%&'*+.^_`|".to_owned(),
    ] {
        let data = sentinel(&format!("key of {} characters", key.len()));
        let response = Delivery::user([1], &data).key(&key).send(herald.addr).await;
        assert_eq!(response.status, 200, "key {key:?}: {}", response.text());
        accepted.push(data);
    }
    for data in &accepted {
        expect_all(&mut watched, data, "only the deliveries with good keys").await;
    }
}

#[tokio::test]
async fn oversized_bodies_and_data_are_refused_with_413() {
    let herald = Herald::builder()
        .config_toml("[deliver]\nmax_body_bytes = 1000\n\n[publish]\nmax_message_bytes = 100\n")
        .start();
    let mut watched = subscribers(&herald, &["1"]).await;
    let mut bystander = Bystander::connect(&herald).await;

    // `data` of exactly 100 bytes is accepted, 101 refused.
    let data_of = |len: usize| format!("\"{}\"", "d".repeat(len - 2));
    let response = Delivery::user([1], &data_of(101)).send(herald.addr).await;
    assert_refused(&response, 413, "payload_too_large", "data of 101 bytes");
    bystander.publish(&herald, "between").await;
    let fits = data_of(100);
    herald.deliver(&Delivery::user([1], &fits)).await;
    expect_all(&mut watched, &fits, "data of exactly max_message_bytes").await;

    // A body of exactly 1000 bytes is accepted, 1001 refused (its data is small).
    let small = r#""small""#;
    let body = body_of_len(1001, small);
    let response = deliver_raw(herald.addr, &body, None).await;
    assert_refused(&response, 413, "payload_too_large", "a body of 1001 bytes");
    // Far over, as a 16 MiB list would be against the default.
    let huge = Delivery::user(1..=10_000, small).body();
    let response = deliver_raw(herald.addr, &huge, None).await;
    assert_refused(&response, 413, "payload_too_large", "a body of 10,000 ids");
    bystander.publish(&herald, "after").await;
    let response = deliver_raw(herald.addr, &body_of_len(1000, small), None).await;
    assert_eq!(
        response.status,
        200,
        "a body of 1000 bytes: {}",
        response.text()
    );
    expect_all(&mut watched, small, "the body that fitted").await;
    bystander.assert_received().await;
}

/// A delivery body of exactly `len` bytes to user 1 and others, with `data`.
fn body_of_len(len: usize, data: &str) -> String {
    let mut ids = vec![1];
    loop {
        let body = Delivery::user(ids.iter().copied(), data).body();
        // The last id is a string that makes up the difference: `,"xxx"` adds its length + 3.
        let missing = len.saturating_sub(body.len());
        if (4..=103).contains(&missing) {
            let filler = "f".repeat(missing - 3);
            let body = Delivery::user(ids.iter().copied(), data)
                .names([filler])
                .body();
            assert_eq!(body.len(), len);
            return body;
        }
        assert!(body.len() < len, "cannot make a body of {len} bytes");
        ids.push(1000 + ids.len() as u64);
    }
}

#[tokio::test]
async fn deliveries_need_the_sites_credential() {
    let secret = "timeline-secret-0123456789";
    let herald = Herald::builder()
        .config_toml(format!("[publish]\nsecret = \"{secret}\"\n"))
        .start();
    let token = Token::for_user("1", 3600).sign(secret);
    let mut ws = WsClient::connect(&herald.ws_url(&format!("/ws?token={token}"))).await;
    let subscribed = ws.subscribe("user:1").await;
    let mut watched = Subscriber {
        user: "1".into(),
        channel: "user:1".into(),
        ws,
        seen: herald_tests::Position::from_json(&subscribed),
    };

    let delivery = Delivery::user([1], &notice(3));
    let response = delivery.send(herald.addr).await;
    assert_refused(&response, 401, "unauthorized", "no credential");
    let response = delivery
        .clone()
        .bearer("not-the-secret-0123456789")
        .send(herald.addr)
        .await;
    assert_refused(&response, 401, "unauthorized", "a secret of no site");
    let body = delivery.body();
    let now = unix_now().to_string();
    let forged = signed_request(
        herald.addr,
        "POST",
        "/api/deliver",
        &body,
        "default",
        "not-the-secret-0123456789",
        &now,
    );
    assert_refused(
        &forged.send().await,
        401,
        "signature_invalid",
        "signed with another secret",
    );
    let old = (unix_now() - 3600).to_string();
    let stale = signed_request(
        herald.addr,
        "POST",
        "/api/deliver",
        &body,
        "default",
        secret,
        &old,
    );
    assert_refused(
        &stale.send().await,
        401,
        "signature_expired",
        "signed an hour ago",
    );
    // A signature for the publish route does not open the deliver route.
    let publish_signature =
        herald_tests::request_signature(secret, "POST", "/api/publish", &now, "", &body);
    let misrouted = Request::post(herald.addr, "/api/deliver")
        .header("X-Herald-Key", "default")
        .header("X-Herald-Timestamp", &now)
        .header("X-Herald-Signature", &publish_signature)
        .json_body(&body);
    assert_refused(
        &misrouted.send().await,
        401,
        "signature_invalid",
        "signed for /api/publish",
    );

    let by_bearer = sentinel("bearer");
    herald
        .deliver(&Delivery::user([1], &by_bearer).bearer(secret))
        .await;
    let by_signature = sentinel("signed");
    let body = Delivery::user([1], &by_signature).body();
    let signed = signed_request(
        herald.addr,
        "POST",
        "/api/deliver",
        &body,
        "default",
        secret,
        &now,
    );
    let response = signed.clone().send().await;
    assert_eq!(
        response.status,
        200,
        "a signed delivery: {}",
        response.text()
    );
    assert_refused(
        &signed.send().await,
        401,
        "signature_replayed",
        "the same signed request again",
    );
    watched
        .expect(&by_bearer, "only accepted deliveries arrive")
        .await;
    watched
        .expect(&by_signature, "only accepted deliveries arrive")
        .await;

    // Publishing to a timeline takes the same credential.
    let response = Request::post(herald.addr, "/api/publish")
        .bearer(secret)
        .json_body(&publish_body("user:1", r#""published""#))
        .send()
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    watched
        .expect(r#""published""#, "a publish to user:1")
        .await;
}

#[tokio::test]
async fn the_dev_site_takes_deliveries_from_its_trusted_networks_only() {
    let trusted = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let herald = Herald::builder()
        .config_toml("[publish]\ntrusted_networks = [\"127.0.0.2/32\"]\n")
        .start();
    let mut watched = subscribers(&herald, &["1"]).await;
    let response = Delivery::user([1], &notice(4)).send(herald.addr).await;
    assert_refused(
        &response,
        403,
        "forbidden",
        "from 127.0.0.1, trusting 127.0.0.2 only",
    );
    let data = sentinel("trusted");
    let response = Delivery::user([1], &data)
        .request(herald.addr)
        .source(trusted)
        .send()
        .await;
    assert_eq!(response.status, 200, "from 127.0.0.2: {}", response.text());
    expect_all(
        &mut watched,
        &data,
        "only the delivery from the trusted address",
    )
    .await;
}

#[tokio::test]
async fn the_publish_rate_costs_one_token_per_shard_message() {
    let herald = Herald::builder()
        .config_toml("[limits]\npublish_rate = 1\npublish_burst = 2\n")
        .start();
    // Users 1, 2 and a third in three distinct shards; 50 users in the first two shards only.
    let shard = |id: u64| shard_of(DEFAULT_SITE, &id.to_string(), DEFAULT_SHARDS);
    let (a, b) = (1u64, 2u64);
    assert_ne!(shard(a), shard(b));
    let c = (3..)
        .find(|&id| shard(id) != shard(a) && shard(id) != shard(b))
        .expect("some id");
    let two_shards: Vec<u64> = (1..)
        .filter(|&id| shard(id) == shard(a) || shard(id) == shard(b))
        .take(50)
        .collect();
    let mut watched = subscribers(&herald, &[&a.to_string(), &b.to_string(), &c.to_string()]).await;

    let response = Delivery::user([a, b, c], &notice(5))
        .send(herald.addr)
        .await;
    assert_refused(
        &response,
        429,
        "rate_limited",
        "three shard messages, two tokens",
    );
    let retry_after: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", response.headers))
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");

    let many = notice(6);
    let answer = herald
        .deliver(&Delivery::user(two_shards.iter().copied(), &many))
        .await;
    assert_eq!(
        (answer.recipients, answer.shards, answer.messages),
        (50, 2, 2)
    );
    expect_all(
        &mut watched[..2],
        &many,
        "50 recipients in two shards cost two tokens",
    )
    .await;

    // The refused delivery reached nobody: each user's next message is a later publish.
    for subscriber in &mut watched {
        let data = sentinel(&format!("after the 429 for {}", subscriber.user));
        publish_when_allowed(&herald, &subscriber.channel, &data).await;
        subscriber
            .expect(&data, "nothing of the refused delivery")
            .await;
    }
}

/// Publishes `data` to `channel`, trying again while the site's bucket is empty.
async fn publish_when_allowed(herald: &Herald, channel: &str, data: &str) {
    let deadline = Instant::now() + REFILL_TIMEOUT;
    loop {
        let response = herald.publish_raw(&publish_body(channel, data)).await;
        match response.status {
            200 => return,
            429 => assert!(
                Instant::now() < deadline,
                "still rate limited after {REFILL_TIMEOUT:?}"
            ),
            _ => panic!("publish to {channel}: {}", response.text()),
        }
        tokio::time::sleep(POLL * 5).await;
    }
}

#[tokio::test]
async fn clients_and_publishers_cannot_reach_the_shard_channels() {
    let herald = Herald::builder()
        .config_toml("[timeline]\nshards = 4\n")
        .start();
    let names = [
        "~t:0",
        "~t:1",
        "~shard:1",
        "t:0",
        "t:1",
        "shard:0",
        "shard:1",
        "timeline:0",
        "timeline:1",
    ];
    let url = herald.ws_url("/ws");
    let mut open = Vec::new();
    for name in names {
        let mut ws = WsClient::connect(&url).await;
        ws.send_json(&json!({"type": "subscribe", "channel": name}))
            .await;
        let answer = ws.next_json(WS_TIMEOUT).await;
        match answer["type"].as_str() {
            Some("subscribed") => open.push((name, ws)),
            Some("error") => assert_eq!(
                answer["code"], "invalid_channel",
                "{name}: a channel name clients cannot use is refused as invalid: {answer}"
            ),
            _ => panic!("{name}: {answer}"),
        }
        let mut sse = SseClient::connect(
            herald.addr,
            &format!("/sse?channel={}", name.replace('~', "%7E")),
            None,
        )
        .await;
        if sse.status != 200 {
            assert_eq!(
                (sse.status, sse.error_code().await.as_str()),
                (400, "invalid_channel"),
                "SSE {name}"
            );
        }
    }
    for name in ["~t:0", "~t:1"] {
        assert!(
            !open.iter().any(|(n, _)| *n == name),
            "{name} is not a channel name a client may use"
        );
        let response = herald.publish_raw(&publish_body(name, "1")).await;
        assert_refused(
            &response,
            400,
            "invalid_channel",
            "publishing to a shard's name",
        );
        let history = herald
            .get(&format!(
                "/api/history?channel={}",
                name.replace('~', "%7E")
            ))
            .await;
        assert_refused(
            &history,
            400,
            "invalid_channel",
            "reading a shard's history",
        );
    }

    // Deliveries to every shard; the channels that could be subscribed receive none of them.
    let mut recipients = subscribers(&herald, &["1", "2", "3", "4", "5", "6", "7", "8"]).await;
    let ids: Vec<u64> = (1..=100).collect();
    let shards = herald_tests::shards_touched(DEFAULT_SITE, ids.iter().map(u64::to_string), 4);
    let notice = notice(7);
    let answer = herald
        .deliver(&Delivery::user(ids.iter().copied(), &notice))
        .await;
    assert_eq!((answer.shards, shards), (4, 4), "every shard touched");
    herald
        .deliver(&Delivery::new("replies", &notice).ids(ids.iter().copied()))
        .await;
    expect_all(
        &mut recipients,
        &notice,
        "recipients get the data, never a recipient list",
    )
    .await;
    for (name, ws) in &mut open {
        let data = sentinel(name);
        let position = herald.publish(name, &data).await;
        match ws.next_event(WS_TIMEOUT).await {
            WsEvent::Text(text) => {
                let message = herald_tests::Delivered::parse(&text);
                assert_eq!(
                    (message.data.as_str(), message.position),
                    (data.as_str(), position),
                    "{name}: an ordinary channel that got nothing of the deliveries"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
