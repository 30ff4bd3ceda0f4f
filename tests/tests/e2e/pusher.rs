//! The Pusher Channels protocol (`/app/<key>`) and REST API (`/apps/<id>/events`,
//! `/batch_events`): pusher-js 8.6.0 (Node) receives what the npm `pusher` 5.3.4 server library
//! triggers, on public and private channels (authorized by the library's own `authorizeChannel`),
//! and what Herald's native API publishes; a native subscriber gets the same JSON byte for byte;
//! a forged signature and an unknown key get what pusher-js expects; every unsigned or
//! wrongly signed REST request is 401, and bad bodies get their 400.

use std::time::Duration;

use herald_tests::{
    Herald, Request, Site, WS_TIMEOUT, WsClient, WsEvent, hmac_hex, sites_toml, unix_now,
};
use md5::{Digest, Md5};

use crate::node_script::{Node, browser_dir, check_dependencies};

const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn start(site: &Site) -> Herald {
    Herald::builder()
        .config_toml(sites_toml("", &[site]))
        .start()
}

#[test]
fn pusher_js_receives_what_the_pusher_server_library_triggers() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let site = Site::new("blog");
    let herald = start(&site);
    let mut native = runtime.block_on(WsClient::connect(
        &herald.ws_url(&format!("/ws?key={}", site.key)),
    ));
    runtime.block_on(native.subscribe("timeline-public"));

    let port = herald.addr.port().to_string();
    let args = ["127.0.0.1", &port, &site.id, &site.key, site.secret()];
    let mut node = Node::spawn(&browser_dir, "pusher.mjs", &args);
    let socket_id = node.expect_prefix("CONNECTED ", STEP_TIMEOUT);
    let (high, low) = socket_id.split_once('.').expect("digits.digits");
    assert!(
        !high.is_empty() && (high.bytes().chain(low.bytes())).all(|b| b.is_ascii_digit()),
        "{socket_id}"
    );
    for channel in ["timeline-public", "private-user-7"] {
        node.send(&format!("SUB {channel}"));
        node.expect(&format!("SUBSCRIBED {channel}"), STEP_TIMEOUT);
    }

    let notice = r#"{"id":2,"text":"from server lib"}"#;
    node.send(&format!("TRIGGER timeline-public new-notice {notice}"));
    node.expect("TRIGGERED 200", STEP_TIMEOUT);
    node.expect(
        &format!("EVENT timeline-public new-notice {notice}"),
        STEP_TIMEOUT,
    );
    let on_native = runtime.block_on(native.next_message(WS_TIMEOUT));
    assert_eq!(
        on_native.data, notice,
        "the JSON the library sent, byte for byte"
    );

    node.send(r#"TRIGGER private-user-7 new-notice {"id":3}"#);
    node.expect("TRIGGERED 200", STEP_TIMEOUT);
    node.expect(r#"EVENT private-user-7 new-notice {"id":3}"#, STEP_TIMEOUT);

    node.send(r#"BATCH timeline-public new-notice {"id":4}"#);
    node.expect("TRIGGERED 200", STEP_TIMEOUT);
    node.expect(
        r#"EVENT timeline-public new-notice {"id":4,"part":1}"#,
        STEP_TIMEOUT,
    );
    node.expect(
        r#"EVENT timeline-public new-notice {"id":4,"part":2}"#,
        STEP_TIMEOUT,
    );

    // With the client's socket_id, the event skips it; the native subscriber gets it, and the
    // next event is the client's next line.
    node.send(r#"TRIGGEROTHERS timeline-public new-notice {"id":"not for me"}"#);
    node.expect("TRIGGERED 200", STEP_TIMEOUT);
    let reached_native = (0..10).any(|_| {
        runtime
            .block_on(native.next_message(WS_TIMEOUT))
            .data
            .contains("not for me")
    });
    assert!(
        reached_native,
        "the native subscriber gets what skips the Pusher client"
    );
    node.send(r#"TRIGGER timeline-public new-notice {"id":"after"}"#);
    node.expect("TRIGGERED 200", STEP_TIMEOUT);
    assert_eq!(
        node.expect_prefix("EVENT ", STEP_TIMEOUT),
        r#"timeline-public new-notice {"id":"after"}"#,
        "the event published with this client's socket_id never reached it"
    );

    // Published through Herald's own API, without an event name: event `message`.
    let response = runtime.block_on(
        site.publish_request(herald.addr, "timeline-public", r#"{"id":5}"#)
            .send(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    node.expect(r#"EVENT timeline-public message {"id":5}"#, STEP_TIMEOUT);

    // A forged channel authorization: pusher:error, and the connection carries on; a presence
    // channel, authorized with the library's channel data, is served (tests/e2e/presence.rs).
    node.send("SUBFORGED private-forged");
    let error = node.expect_prefix("ERROR ", STEP_TIMEOUT);
    assert!(
        error.contains(r#""code":null"#) && error.contains("private-forged: the signature"),
        "{error}"
    );
    node.send("SUB presence-room");
    node.expect("SUBSCRIBED presence-room", STEP_TIMEOUT);
    node.send(r#"TRIGGER timeline-public new-notice {"id":6}"#);
    node.expect(r#"EVENT timeline-public new-notice {"id":6}"#, STEP_TIMEOUT);

    // Signed in by the library's authenticateUser, the client gets what sendToUser sends it,
    // and what a timeline delivery brings its user.
    node.send("SIGNIN 42");
    node.expect("SIGNEDIN", STEP_TIMEOUT);
    // pusher-js subscribes to #server-to-user-42 by itself once signed in: give it a moment by
    // waiting for an event that goes through, sent until one arrives.
    let mut seen = String::new();
    for attempt in 0..20 {
        node.send(&format!(r#"TOUSER 42 notice {{"n":{attempt}}}"#));
        node.expect("TRIGGERED 200", STEP_TIMEOUT);
        seen = node.expect_prefix_within("USEREVENT ", Duration::from_millis(500));
        if !seen.is_empty() {
            break;
        }
    }
    assert!(seen.starts_with(r#"notice {"n":"#), "{seen}");
    let delivery =
        herald_tests::Delivery::user([42], r#"{"id":8,"text":"home"}"#).bearer(site.secret());
    let answer = runtime.block_on(delivery.send(herald.addr));
    assert_eq!(answer.status, 200, "{}", answer.text());
    node.expect(r#"USEREVENT message {"id":8,"text":"home"}"#, STEP_TIMEOUT);

    node.send("DONE");
    node.expect("BYE", STEP_TIMEOUT);
    node.finish();
    drop(herald);
}

/// A REST request signed the way the Pusher libraries sign it (protocols.md §1.7).
fn signed(
    site: &Site,
    herald: &Herald,
    path: &str,
    body: &str,
    secret: &str,
    timestamp: u64,
) -> Request {
    let md5 = hex::encode(Md5::digest(body.as_bytes()));
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
        site.key
    );
    let signature = hmac_hex(secret, &format!("POST\n{path}\n{query}"));
    Request::post(
        herald.addr,
        &format!("{path}?{query}&auth_signature={signature}"),
    )
    .json_body(body)
}

#[tokio::test]
async fn rest_requests_are_401_unless_signed_and_bad_bodies_get_their_400() {
    let site = Site::new("blog");
    let herald = start(&site);
    let mut native = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", site.key))).await;
    native.subscribe("a").await;
    let now = unix_now();
    let path = "/apps/blog/events";
    let body = r#"{"name":"e","data":"{\"n\":1}","channels":["a"]}"#;

    let unsigned = Request::post(herald.addr, path)
        .json_body(body)
        .send()
        .await;
    unsigned.assert_error(401, "unauthorized");
    let cases = [
        (
            "wrong secret",
            signed(&site, &herald, path, body, "not-the-secret-at-all", now),
        ),
        (
            "stale",
            signed(&site, &herald, path, body, site.secret(), now - 601),
        ),
        (
            "another app's path",
            signed(
                &site,
                &herald,
                "/apps/other/events",
                body,
                site.secret(),
                now,
            ),
        ),
    ];
    for (why, request) in cases {
        let answer = request.send().await;
        assert_eq!(answer.status, 401, "{why}: {}", answer.text());
        answer.assert_error(401, "unauthorized");
    }
    // A body other than the one signed.
    let tampered = signed(&site, &herald, path, body, site.secret(), now)
        .json_body(&body.replace("\\\"n\\\":1", "\\\"n\\\":2"));
    let answer = tampered.send().await;
    answer.assert_error(401, "unauthorized");
    assert!(answer.text().contains("body_md5"), "{}", answer.text());

    let bad_bodies = [
        ("not json", "bad_json"),
        (r#"{"data":"{}","channels":["a"]}"#, "bad_request"),
        (r#"{"name":"e","channels":["a"]}"#, "bad_request"),
        (r#"{"name":"e","data":"{}","channels":[]}"#, "bad_request"),
        // A publisher cannot pass its event off as a presence change.
        (
            r#"{"name":"pusher_internal:member_removed","data":"{}","channels":["presence-a"]}"#,
            "bad_request",
        ),
        (
            r#"{"name":"e","data":"{}","channels":["a b"]}"#,
            "invalid_channel",
        ),
        // The good channel before the bad one gets nothing either (offset 1 below says so).
        (
            r#"{"name":"e","data":"{}","channels":["a","a b"]}"#,
            "invalid_channel",
        ),
        (
            r#"{"name":"e","data":"{}","channels":["a"],"socket_id":"not-a-socket"}"#,
            "bad_request",
        ),
    ];
    for (bad, code) in bad_bodies {
        signed(&site, &herald, path, bad, site.secret(), now)
            .send()
            .await
            .assert_error(400, code);
    }
    let eleven: Vec<String> = (0..11)
        .map(|i| format!(r#"{{"channel":"a","name":"e","data":"{{\"n\":{i}}}"}}"#))
        .collect();
    let batch = format!(r#"{{"batch":[{}]}}"#, eleven.join(","));
    signed(
        &site,
        &herald,
        "/apps/blog/batch_events",
        &batch,
        site.secret(),
        now,
    )
    .send()
    .await
    .assert_error(400, "bad_request");
    Request::get(herald.addr, path)
        .send()
        .await
        .assert_error(405, "method_not_allowed");
    signed(
        &site,
        &herald,
        "/apps/blog/other/events",
        body,
        site.secret(),
        now,
    )
    .send()
    .await
    .assert_error(404, "not_found");

    // Nothing refused was published; the signed one is.
    let good = signed(&site, &herald, path, body, site.secret(), now)
        .send()
        .await;
    assert_eq!((good.status, good.text().as_str()), (200, "{}"));
    let message = native.next_json(WS_TIMEOUT).await;
    assert_eq!(message["offset"], 1, "{message}");
    assert_eq!(message["data"], serde_json::json!({"n":1}), "{message}");
    assert_eq!(
        message["event"], "e",
        "native clients see the event name too: {message}"
    );
}

#[tokio::test]
async fn an_unknown_key_is_told_4001_which_pusher_js_does_not_retry() {
    let site = Site::new("blog");
    let herald = start(&site);
    let mut client =
        WsClient::connect_silent(&herald.ws_url("/app/no-such-key?protocol=7&client=js")).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(error["data"]["code"], 4001, "{error}");
    match client.next_event(WS_TIMEOUT).await {
        WsEvent::Close(code, _) => assert_eq!(code, 4001),
        other => panic!("expected the close, got {other:?}"),
    }
    let mut fine =
        WsClient::connect_silent(&herald.ws_url(&format!("/app/{}?protocol=7", site.key))).await;
    let established = fine.next_json(WS_TIMEOUT).await;
    assert_eq!(established["event"], "pusher:connection_established");
    let data: serde_json::Value =
        serde_json::from_str(established["data"].as_str().expect("data is a string")).unwrap();
    assert!(data["activity_timeout"].as_u64().unwrap_or(0) > 0, "{data}");
}

/// On Redis an event name travels with its message: a Pusher client on another node gets the
/// event under its name, and a native client resuming from history gets the data alone.
#[tokio::test]
async fn on_redis_event_names_reach_other_nodes_and_history_keeps_the_data_alone() {
    let redis = herald_tests::Redis::start();
    let site = Site::new("blog");
    let toml = sites_toml("", &[&site]);
    let a = crate::redis::node(&redis.url())
        .config_toml(toml.clone())
        .start();
    let b = crate::redis::node(&redis.url()).config_toml(toml).start();
    let mut pusher =
        WsClient::connect_silent(&b.ws_url(&format!("/app/{}?protocol=7", site.key))).await;
    let established = pusher.next_json(WS_TIMEOUT).await;
    assert_eq!(established["event"], "pusher:connection_established");
    pusher
        .send_text(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"timeline-public"}}"#)
        .await;
    let succeeded = pusher.next_json(WS_TIMEOUT).await;
    assert_eq!(
        succeeded["event"], "pusher_internal:subscription_succeeded",
        "{succeeded}"
    );

    let body = r#"{"name":"new-notice","data":"{\"id\":7}","channels":["timeline-public"]}"#;
    let answer = signed(
        &site,
        &a,
        "/apps/blog/events",
        body,
        site.secret(),
        unix_now(),
    )
    .send()
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let frame = pusher.next_json(WS_TIMEOUT).await;
    assert_eq!(
        frame,
        serde_json::json!({"event":"new-notice","channel":"timeline-public","data":"{\"id\":7}"})
    );

    let mut native = WsClient::connect(&b.ws_url(&format!("/ws?key={}", site.key))).await;
    let epoch = frame_epoch(&mut native).await;
    let subscribed = native.subscribe_since("timeline-public", &epoch, 0).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let replayed = native.next_message(WS_TIMEOUT).await;
    assert_eq!(
        replayed.data, r#"{"id":7}"#,
        "history holds the data without the event name"
    );
}

/// The epoch of `timeline-public`, read with a subscribe and an unsubscribe.
async fn frame_epoch(native: &mut WsClient) -> String {
    let subscribed = native.subscribe("timeline-public").await;
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    native
        .send_json(&serde_json::json!({"type":"unsubscribe","channel":"timeline-public"}))
        .await;
    let answer = native.next_json(WS_TIMEOUT).await;
    assert_eq!(answer["type"], "unsubscribed", "{answer}");
    epoch
}

/// A raw Pusher connection to `/app/<key>`: answers it and its socket id.
async fn pusher_socket(herald: &Herald, key: &str) -> (WsClient, String) {
    let mut client =
        WsClient::connect_silent(&herald.ws_url(&format!("/app/{key}?protocol=7"))).await;
    let established = client.next_json(WS_TIMEOUT).await;
    assert_eq!(
        established["event"], "pusher:connection_established",
        "{established}"
    );
    let data: serde_json::Value =
        serde_json::from_str(established["data"].as_str().expect("a string")).expect("JSON");
    let socket_id = data["socket_id"].as_str().expect("a socket id").to_owned();
    (client, socket_id)
}

/// Subscribes with the site's Pusher authorization (`key:hex(HMAC(secret, socket_id:channel))`).
async fn subscribe_private(client: &mut WsClient, site: &Site, socket_id: &str, channel: &str) {
    let auth = format!(
        "{}:{}",
        site.key,
        site.channel_signature(socket_id, channel)
    );
    let frame =
        serde_json::json!({"event":"pusher:subscribe","data":{"auth":auth,"channel":channel}});
    client.send_json(&frame).await;
    let answer = client.next_json(WS_TIMEOUT).await;
    assert_eq!(
        answer["event"], "pusher_internal:subscription_succeeded",
        "{answer}"
    );
}

#[tokio::test]
async fn client_events_reach_the_other_subscribers_where_the_site_allows_them() {
    let allowing = Site::new("chat");
    let other = Site::new("blog");
    let toml = sites_toml("", &[&other]) + "\n" + &allowing.toml() + "client_events = true\n";
    let herald = Herald::builder().config_toml(toml).start();

    let (mut sender, sender_id) = pusher_socket(&herald, &allowing.key).await;
    let (mut receiver, receiver_id) = pusher_socket(&herald, &allowing.key).await;
    subscribe_private(&mut sender, &allowing, &sender_id, "private-room").await;
    subscribe_private(&mut receiver, &allowing, &receiver_id, "private-room").await;

    sender
        .send_text(r#"{"event":"client-typing","channel":"private-room","data":{"typing":true}}"#)
        .await;
    let relayed = receiver.next_json(WS_TIMEOUT).await;
    assert_eq!(
        relayed,
        serde_json::json!({"event":"client-typing","channel":"private-room","data":"{\"typing\":true}"})
    );
    // Never back to the sender: its next frame is the answer to its ping.
    sender
        .send_text(r#"{"event":"pusher:ping","data":{}}"#)
        .await;
    assert_eq!(sender.next_json(WS_TIMEOUT).await["event"], "pusher:pong");

    // Refused: a public channel, a channel not subscribed to, and a site that does not allow them.
    let refusals = [
        (
            r#"{"event":"client-x","channel":"public","data":{}}"#,
            "private and presence channels only",
        ),
        (
            r#"{"event":"client-x","channel":"private-elsewhere","data":{}}"#,
            "subscribe to the channel",
        ),
    ];
    for (frame, why) in refusals {
        sender.send_text(frame).await;
        let error = sender.next_json(WS_TIMEOUT).await;
        assert_eq!(error["event"], "pusher:error", "{error}");
        assert!(
            error["data"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(why),
            "{error}"
        );
    }
    let (mut elsewhere, elsewhere_id) = pusher_socket(&herald, &other.key).await;
    subscribe_private(&mut elsewhere, &other, &elsewhere_id, "private-room").await;
    elsewhere
        .send_text(r#"{"event":"client-x","channel":"private-room","data":{}}"#)
        .await;
    let error = elsewhere.next_json(WS_TIMEOUT).await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not enabled on this site"),
        "{error}"
    );
    // The receiver got nothing of the refused ones.
    receiver
        .send_text(r#"{"event":"pusher:ping","data":{}}"#)
        .await;
    assert_eq!(receiver.next_json(WS_TIMEOUT).await["event"], "pusher:pong");
}

#[tokio::test]
async fn a_users_channel_is_only_for_the_connection_signed_in_as_that_user() {
    let site = Site::new("blog");
    let herald = start(&site);
    let (mut client, socket_id) = pusher_socket(&herald, &site.key).await;
    let subscribe = |channel: &str| serde_json::json!({"event":"pusher:subscribe","data":{"auth":"","channel":channel}});
    // Not signed in: no user's channel.
    client.send_json(&subscribe("#server-to-user-42")).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert_eq!(error["event"], "pusher:error", "{error}");

    let user_data = r#"{"id":"42","user_info":{"nickname":"evan"}}"#;
    let forged = serde_json::json!({"event":"pusher:signin","data":{
        "auth": format!("{}:{}", site.key, hmac_hex(site.secret(), &format!("{socket_id}::user::{{\"id\":\"43\"}}"))),
        "user_data": user_data}});
    client.send_json(&forged).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not signed by the site"),
        "{error}"
    );
    let auth = hmac_hex(site.secret(), &format!("{socket_id}::user::{user_data}"));
    let signin = serde_json::json!({"event":"pusher:signin","data":{
        "auth": format!("{}:{auth}", site.key), "user_data": user_data}});
    client.send_json(&signin).await;
    let success = client.next_json(WS_TIMEOUT).await;
    assert_eq!(success["event"], "pusher:signin_success", "{success}");
    let data: serde_json::Value =
        serde_json::from_str(success["data"].as_str().expect("a string")).expect("JSON");
    assert_eq!(data["user_data"], user_data, "the user data as signed");

    client.send_json(&subscribe("#server-to-user-43")).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("another user"),
        "{error}"
    );
    client.send_json(&subscribe("#server-to-user-42")).await;
    let succeeded = client.next_json(WS_TIMEOUT).await;
    assert_eq!(
        succeeded["event"], "pusher_internal:subscription_succeeded",
        "{succeeded}"
    );
    assert_eq!(succeeded["channel"], "#server-to-user-42");
    // Herald's own name for it is not a Pusher client's to use.
    client.send_json(&subscribe("user:42")).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
}

/// The Python clients' interpreter (`scripts/install-test-deps.sh` makes the venv).
fn python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/.venv/bin/python");
    assert!(
        python.is_file(),
        "no {}: run `scripts/install-test-deps.sh` first",
        python.display()
    );
    python
}

fn python_script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

#[test]
fn laravel_echo_and_pysher_get_what_the_python_library_triggers() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    // The PyPI library wants a numeric app id: a site with one.
    let site = Site::new("12345");
    let herald = start(&site);
    let port = herald.addr.port().to_string();
    let args = ["127.0.0.1", &port, &site.id, &site.key, site.secret()];
    let mut echo = Node::spawn(&browser_dir, "echo.mjs", &args);
    echo.send("PUBLIC timeline-public new-notice");
    echo.expect("LISTENING timeline-public", STEP_TIMEOUT);
    echo.send("PRIVATE user-7 new-notice");
    echo.expect("LISTENING private-user-7", STEP_TIMEOUT);

    // pysher speaks protocol 6; it prints one line per event, read as a child's stdout.
    let mut pysher = std::process::Command::new(python())
        .arg(python_script("pysher_listen.py"))
        .args([
            "127.0.0.1",
            &port,
            &site.key,
            "timeline-public",
            "new-notice",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run pysher_listen.py");
    let (lines, pysher_lines) = std::sync::mpsc::channel();
    let stdout = pysher.stdout.take().expect("piped");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next_pysher_line = || {
        pysher_lines
            .recv_timeout(STEP_TIMEOUT)
            .expect("a line from pysher in time")
    };
    assert_eq!(next_pysher_line(), "SUBSCRIBED");

    let trigger = |channel: &str, data: &str| {
        let output = std::process::Command::new(python())
            .arg(python_script("pusher_trigger.py"))
            .args(["127.0.0.1", &port, &site.id, &site.key, site.secret()])
            .args([channel, "new-notice", data])
            .output()
            .expect("run pusher_trigger.py");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "pusher_trigger.py: {stdout}");
        assert_eq!(stdout.trim(), "{}", "the library's answer");
    };
    trigger("timeline-public", r#"{"id":10}"#);
    echo.expect(
        r#"EVENT timeline-public new-notice {"id":10}"#,
        STEP_TIMEOUT,
    );
    // The library sends json.dumps(data), spaces and all, and Herald keeps it byte for byte.
    assert_eq!(next_pysher_line(), r#"EVENT {"id": 10}"#);
    trigger("private-user-7", r#"{"id":11}"#);
    echo.expect(r#"EVENT private-user-7 new-notice {"id":11}"#, STEP_TIMEOUT);

    // Echo.join(): the member list (Echo's here() gives each member's user_info), and what the
    // PyPI library triggers on the presence channel.
    echo.send("PRESENCE lobby new-notice");
    echo.expect("HERE presence-lobby Echo", STEP_TIMEOUT);
    trigger("presence-lobby", r#"{"id":12}"#);
    echo.expect(r#"EVENT presence-lobby new-notice {"id":12}"#, STEP_TIMEOUT);

    echo.send("DONE");
    echo.expect("BYE", STEP_TIMEOUT);
    echo.finish();
    let _ = pysher.kill();
    let _ = pysher.wait();
}

/// A protocol version from the future is refused with `pusher:error` and 4009, which pusher-js
/// does not retry (docs/compat.md).
#[tokio::test]
async fn a_protocol_from_the_future_is_refused_4009() {
    let site = Site::new("blog");
    let herald = start(&site);
    let url = herald.ws_url(&format!("/app/{}?protocol=8", site.key));
    let mut client = WsClient::connect_silent(&url).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(error["data"]["code"], 4009, "{error}");
    match client.next_event(WS_TIMEOUT).await {
        WsEvent::Close(code, _) => assert_eq!(code, 4009),
        other => panic!("expected the close, got {other:?}"),
    }
}

/// A sign-in whose user data has no usable id, a client event over the site's
/// `max_message_bytes`, and one past its `publish_rate`, are `pusher:error`s; the connection
/// carries on.
#[tokio::test]
async fn bad_sign_ins_and_oversized_client_events_get_pusher_errors() {
    let site = Site::new("chat")
        .limit("max_message_bytes", 64)
        .limit("publish_rate", 1)
        .limit("publish_burst", 1);
    let toml = sites_toml("", &[])
        + &site
            .toml()
            .replace("\n[sites.limits]", "client_events = true\n\n[sites.limits]");
    let herald = Herald::builder().config_toml(toml).start();
    let (mut client, socket_id) = pusher_socket(&herald, &site.key).await;
    let user_data = r#"{"name":"no id"}"#;
    let auth = hmac_hex(site.secret(), &format!("{socket_id}::user::{user_data}"));
    let signin = serde_json::json!({"event":"pusher:signin","data":{
        "auth": format!("{}:{auth}", site.key), "user_data": user_data}});
    client.send_json(&signin).await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("user_data"),
        "{error}"
    );

    subscribe_private(&mut client, &site, &socket_id, "private-room").await;
    let big = "x".repeat(100);
    client
        .send_json(
            &serde_json::json!({"event":"client-x","channel":"private-room","data":{"text":big}}),
        )
        .await;
    let error = client.next_json(WS_TIMEOUT).await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most 64 bytes"),
        "{error}"
    );
    // Past the site's publish_rate: the first goes out, the second is refused.
    for _ in 0..2 {
        client
            .send_text(r#"{"event":"client-x","channel":"private-room","data":{}}"#)
            .await;
    }
    let error = client.next_json(WS_TIMEOUT).await;
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("publish_rate"),
        "{error}"
    );
    client
        .send_text(r#"{"event":"pusher:ping","data":{}}"#)
        .await;
    assert_eq!(client.next_json(WS_TIMEOUT).await["event"], "pusher:pong");
}
