//! Presence channels (`presence-…`): pusher-js 8.6.0 clients, authorized by the npm `pusher`
//! 5.3.4 library's own `authorizeChannel` with their channel data, see each other come and go;
//! a user with two connections is one member (no duplicate join, no early leave); a native client
//! joins with the same signature and gets the list in `subscribed`; a forged signature and
//! unsigned channel data are refused. On Redis, two nodes share one member list, and a SIGKILLed
//! node's members leave within `redis.presence_timeout_ms`.

use std::time::Duration;

use herald_tests::{Herald, Redis, Site, WS_TIMEOUT, WsClient, hmac_hex, sites_toml};
use serde_json::{Value, json};

use crate::node_script::{Node, browser_dir, check_dependencies};

const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const ROOM: &str = "presence-room";

/// A pusher-js client on `herald` as `user`, connected.
fn member(herald: &Herald, site: &Site, user: &str) -> Node {
    let browser_dir = browser_dir();
    let port = herald.addr.port().to_string();
    let args = ["127.0.0.1", &port, &site.id, &site.key, site.secret(), user];
    let mut node = Node::spawn(&browser_dir, "presence.mjs", &args);
    node.expect_prefix("CONNECTED ", STEP_TIMEOUT);
    node
}

/// Joins `ROOM` and answers what `subscription_succeeded` listed: `<count> <ids> <me>`.
fn join(node: &mut Node) -> String {
    node.send(&format!("JOIN {ROOM}"));
    node.expect_prefix(&format!("MEMBERS {ROOM} "), STEP_TIMEOUT)
}

/// The next presence-related line: a member change or an event.
fn next_change(node: &mut Node) -> String {
    let prefixes = ["ADDED ", "REMOVED ", "EVENT "];
    loop {
        let line = node.expect_prefix("", STEP_TIMEOUT);
        if prefixes.iter().any(|p| line.starts_with(p)) {
            return line;
        }
    }
}

/// Triggers a marker event through the REST API and answers the next change `node` saw: the
/// marker itself when nothing came before it. `trigger` must not be subscribed to the channel:
/// its `TRIGGERED` and the event's line could come in either order.
fn change_before_marker(trigger: &mut Node, node: &mut Node, n: u32) -> String {
    trigger.send(&format!(r#"TRIGGER {ROOM} marker {{"n":{n}}}"#));
    trigger.expect("TRIGGERED 200", STEP_TIMEOUT);
    next_change(node)
}

/// The npm library's `get()` of `path` with `params`: `<status> <body>`.
fn get(node: &mut Node, path: &str, params: &Value) -> String {
    node.send(&format!("GET {path} {params}"));
    node.expect_prefix("GOT ", STEP_TIMEOUT)
}

fn marker(n: u32) -> String {
    format!(r#"EVENT {ROOM} marker {{"n":{n}}}"#)
}

/// A native WebSocket client joining `ROOM` as `user`, signed as Pusher signs presence.
async fn native_join(herald: &Herald, site: &Site, user: &str) -> (WsClient, Value) {
    let mut client = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", site.key))).await;
    let connection_id = client.welcome["connection_id"]
        .as_str()
        .expect("a connection id")
        .to_owned();
    let channel_data = json!({"user_id": user, "user_info": {"via": "native"}}).to_string();
    let signature = hmac_hex(
        site.secret(),
        &format!("{connection_id}:{ROOM}:{channel_data}"),
    );
    let frame = json!({"type":"subscribe","channel":ROOM,"signature":signature,"channel_data":channel_data});
    client.send_json(&frame).await;
    let subscribed = client.next_json(WS_TIMEOUT).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    (client, subscribed)
}

/// The next member event a native client gets (a message tagged with Pusher's event name),
/// skipping other messages.
async fn next_member_event(client: &mut WsClient) -> Value {
    loop {
        let frame = client.next_json(STEP_TIMEOUT).await;
        let event = frame["event"].as_str().unwrap_or("");
        if event.starts_with("pusher_internal:member_") {
            return frame;
        }
    }
}

/// Ann is gone for both kinds of client: bob (pusher-js) hears it and lists bob and carl; the
/// native client gets the member event.
fn ann_left(runtime: &tokio::runtime::Runtime, bob: &mut Node, native: &mut WsClient) {
    assert_eq!(next_change(bob), format!("REMOVED {ROOM} ann"));
    let removed = runtime.block_on(next_member_event(native));
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    assert_eq!(removed["data"], json!({"user_id":"ann"}), "{removed}");
    bob.send(&format!("LIST {ROOM}"));
    assert_eq!(
        bob.expect_prefix(&format!("MEMBERS {ROOM} "), STEP_TIMEOUT),
        "2 bob,carl bob"
    );
}

fn member_ids(subscribed: &Value) -> Vec<String> {
    subscribed["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user_id"].as_str().expect("a user id").to_owned())
        .collect()
}

#[test]
fn pusher_js_members_come_and_go_once_per_user() {
    check_dependencies(&browser_dir());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let site = Site::new("chat");
    let toml = sites_toml("", &[]) + &site.toml() + "client_events = true\n";
    let herald = Herald::builder().config_toml(toml).start();

    let mut ann = member(&herald, &site, "ann");
    assert_eq!(join(&mut ann), "1 ann ann");
    let mut bob = member(&herald, &site, "bob");
    assert_eq!(join(&mut bob), "2 ann,bob bob");
    assert_eq!(
        next_change(&mut ann),
        format!(r#"ADDED {ROOM} bob {{"name":"user bob"}}"#)
    );

    // Ann's second connection: the list is the same, and bob hears of no new member.
    let mut ann_again = member(&herald, &site, "ann");
    assert_eq!(join(&mut ann_again), "2 ann,bob ann");
    assert_eq!(change_before_marker(&mut ann, &mut bob, 1), marker(1));
    // It leaves, and ann is still there.
    ann_again.send(&format!("LEAVE {ROOM}"));
    ann_again.expect(&format!("LEFT {ROOM}"), STEP_TIMEOUT);
    assert_eq!(change_before_marker(&mut ann, &mut bob, 2), marker(2));

    // Client events reach the other members.
    ann.send(&format!(r#"CLIENT {ROOM} client-typing {{"t":1}}"#));
    ann.expect("SENT", STEP_TIMEOUT);
    assert_eq!(
        next_change(&mut bob),
        format!(r#"EVENT {ROOM} client-typing {{"t":1}}"#)
    );

    // A native client joins with the same signature, and hears what pusher-js hears.
    let (mut native, subscribed) = runtime.block_on(native_join(&herald, &site, "carl"));
    assert_eq!(member_ids(&subscribed), ["ann", "bob", "carl"]);
    assert_eq!(
        subscribed["members"][0],
        json!({"user_id":"ann","user_info":{"name":"user ann"}})
    );
    assert_eq!(
        next_change(&mut bob),
        format!(r#"ADDED {ROOM} carl {{"via":"native"}}"#)
    );

    // The REST API's channel information says the same, through the npm library's get().
    let info = json!({"info": "user_count,subscription_count"});
    assert_eq!(
        get(&mut bob, &format!("/channels/{ROOM}"), &info),
        r#"200 {"occupied":true,"subscription_count":3,"user_count":3}"#
    );
    let presence_only = json!({"filter_by_prefix": "presence-", "info": "user_count"});
    assert_eq!(
        get(&mut bob, "/channels", &presence_only),
        format!(r#"200 {{"channels":{{"{ROOM}":{{"user_count":3}}}}}}"#)
    );
    assert_eq!(
        get(&mut bob, &format!("/channels/{ROOM}/users"), &json!({})),
        r#"200 {"users":[{"id":"ann"},{"id":"bob"},{"id":"carl"}]}"#
    );
    assert_eq!(
        get(
            &mut bob,
            "/channels/nobody-here",
            &json!({"info": "subscription_count"})
        ),
        r#"200 {"occupied":false,"subscription_count":0}"#
    );
    // Users of a channel that has none: 400, as Pusher answers.
    for (path, params) in [
        ("/channels", json!({"info": "user_count"})),
        ("/channels/public-x", json!({"info": "user_count"})),
        ("/channels/public-x/users", json!({})),
    ] {
        let answer = get(&mut bob, path, &params);
        assert!(answer.starts_with("400 "), "{path}: {answer}");
    }
    // Unsigned, or signed by another secret: 401.
    let unsigned = runtime.block_on(
        herald_tests::Request::get(herald.addr, &format!("/apps/{}/channels", site.id)).send(),
    );
    unsigned.assert_error(401, "unauthorized");
    let forged = format!(
        "/apps/{}/channels?auth_key={}&auth_timestamp={}&auth_version=1.0&auth_signature={}",
        site.id,
        site.key,
        herald_tests::unix_now(),
        "0".repeat(64)
    );
    let forged = runtime.block_on(herald_tests::Request::get(herald.addr, &forged).send());
    forged.assert_error(401, "unauthorized");
    let posted = runtime.block_on(
        herald_tests::Request::post(herald.addr, &format!("/apps/{}/channels", site.id)).send(),
    );
    posted.assert_error(405, "method_not_allowed");

    // Ann's last connection goes: she leaves, for both kinds of client.
    ann.send("DONE");
    ann.expect("BYE", STEP_TIMEOUT);
    ann.finish();
    ann_left(&runtime, &mut bob, &mut native);

    // A forged authorization is refused, and the connection carries on.
    let mut eve = member(&herald, &site, "eve");
    eve.send(&format!("JOINFORGED {ROOM}"));
    let error = eve.expect_prefix("ERROR ", STEP_TIMEOUT);
    assert!(error.contains(&format!("{ROOM}: the signature")), "{error}");
    // Nor did it join: the next change bob sees is the marker.
    assert_eq!(change_before_marker(&mut ann_again, &mut bob, 3), marker(3));
    for node in [&mut bob, &mut ann_again, &mut eve] {
        node.send("DONE");
        node.expect("BYE", STEP_TIMEOUT);
        node.finish();
    }
}

#[tokio::test]
async fn native_presence_refuses_what_it_cannot_trust() {
    let site = Site::new("chat");
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&site]))
        .start();
    let mut client = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", site.key))).await;
    let connection_id = client.welcome["connection_id"]
        .as_str()
        .expect("a connection id")
        .to_owned();

    // No signature; a signature of other channel data; channel data that is no member.
    client
        .send_json(&json!({"type":"subscribe","channel":ROOM}))
        .await;
    client.expect_error("signature_required").await;
    let signed = json!({"user_id":"ann"}).to_string();
    let signature = hmac_hex(site.secret(), &format!("{connection_id}:{ROOM}:{signed}"));
    let other = json!({"user_id":"mallory"}).to_string();
    client
        .send_json(
            &json!({"type":"subscribe","channel":ROOM,"signature":signature,"channel_data":other}),
        )
        .await;
    client.expect_error("signature_invalid").await;
    let nobody = json!({"user_info":{}}).to_string();
    let signature = hmac_hex(site.secret(), &format!("{connection_id}:{ROOM}:{nobody}"));
    client
        .send_json(
            &json!({"type":"subscribe","channel":ROOM,"signature":signature,"channel_data":nobody}),
        )
        .await;
    let error = client.expect_error("bad_request").await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("user_id"),
        "{error}"
    );

    // The connection carries on: the signed member joins.
    let signature = hmac_hex(site.secret(), &format!("{connection_id}:{ROOM}:{signed}"));
    client
        .send_json(
            &json!({"type":"subscribe","channel":ROOM,"signature":signature,"channel_data":signed}),
        )
        .await;
    let subscribed = client.next_json(WS_TIMEOUT).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(member_ids(&subscribed), ["ann"]);
}

/// Starts a node on `redis` for `site`, whose presence heartbeat times out after 1.5 s.
fn redis_node(redis: &Redis, site: &Site) -> Herald {
    crate::redis::node(&redis.url())
        .config_toml(sites_toml("[redis]\npresence_timeout_ms = 1500\n", &[site]))
        .start()
}

#[test]
fn two_nodes_on_redis_share_members_and_a_killed_nodes_members_leave() {
    check_dependencies(&browser_dir());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let redis = Redis::start();
    let site = Site::new("chat");
    let a = redis_node(&redis, &site);
    let b = redis_node(&redis, &site);
    // Triggers the markers; on no channel itself, so that its lines come in one order.
    let mut trigger = member(&b, &site, "dave");

    let mut ann = member(&a, &site, "ann");
    assert_eq!(join(&mut ann), "1 ann ann");
    let mut bob = member(&b, &site, "bob");
    assert_eq!(
        join(&mut bob),
        "2 ann,bob bob",
        "ann on node A is listed on B"
    );
    assert_eq!(
        next_change(&mut ann),
        format!(r#"ADDED {ROOM} bob {{"name":"user bob"}}"#)
    );
    let (mut native, subscribed) = runtime.block_on(native_join(&b, &site, "carl"));
    assert_eq!(member_ids(&subscribed), ["ann", "bob", "carl"]);
    assert_eq!(
        next_change(&mut ann),
        format!(r#"ADDED {ROOM} carl {{"via":"native"}}"#)
    );
    assert_eq!(
        next_change(&mut bob),
        format!(r#"ADDED {ROOM} carl {{"via":"native"}}"#)
    );

    // Node A's REST API counts B's subscribers too.
    let info = json!({"info": "user_count,subscription_count"});
    assert_eq!(
        get(&mut ann, &format!("/channels/{ROOM}"), &info),
        r#"200 {"occupied":true,"subscription_count":3,"user_count":3}"#
    );
    assert_eq!(
        get(
            &mut ann,
            "/channels",
            &json!({"filter_by_prefix": "presence-"})
        ),
        format!(r#"200 {{"channels":{{"{ROOM}":{{}}}}}}"#)
    );

    // A member who joins on B and leaves again: both nodes hear both.
    let mut erin = member(&b, &site, "erin");
    assert_eq!(join(&mut erin), "4 ann,bob,carl,erin erin");
    let added = format!(r#"ADDED {ROOM} erin {{"name":"user erin"}}"#);
    assert_eq!(next_change(&mut ann), added);
    assert_eq!(next_change(&mut bob), added);
    erin.send(&format!("LEAVE {ROOM}"));
    erin.expect(&format!("LEFT {ROOM}"), STEP_TIMEOUT);
    assert_eq!(next_change(&mut ann), format!("REMOVED {ROOM} erin"));
    assert_eq!(next_change(&mut bob), format!("REMOVED {ROOM} erin"));
    for event in ["member_added", "member_removed"] {
        let heard = runtime.block_on(next_member_event(&mut native));
        assert_eq!(
            heard["event"],
            format!("pusher_internal:{event}"),
            "{heard}"
        );
        assert_eq!(heard["data"]["user_id"], "erin", "{heard}");
    }

    // A second connection of bob's, on the other node: no duplicate join anywhere.
    let mut bob_on_a = member(&a, &site, "bob");
    assert_eq!(join(&mut bob_on_a), "3 ann,bob,carl bob");
    assert_eq!(change_before_marker(&mut trigger, &mut ann, 1), marker(1));
    assert_eq!(next_change(&mut bob), marker(1));

    // Node A is killed (SIGKILL) under its clients: ann (only there) leaves; bob (also on B)
    // stays.
    drop(a);
    drop(bob_on_a);
    drop(ann);
    ann_left(&runtime, &mut bob, &mut native);
    // Nothing more left with the node: the next change bob sees is the marker.
    assert_eq!(change_before_marker(&mut trigger, &mut bob, 2), marker(2));

    // A node started in A's place (a deploy) starts clean: ann joins once, as new.
    let a_again = redis_node(&redis, &site);
    let mut ann = member(&a_again, &site, "ann");
    assert_eq!(join(&mut ann), "3 ann,bob,carl ann");
    assert_eq!(
        next_change(&mut bob),
        format!(r#"ADDED {ROOM} ann {{"name":"user ann"}}"#)
    );
    for node in [&mut ann, &mut bob, &mut trigger] {
        node.send("DONE");
        node.expect("BYE", STEP_TIMEOUT);
        node.finish();
    }
}

/// A node stopped gracefully (a deploy) takes its members with it at once: with a heartbeat
/// timeout of a minute, they still leave within the step's wait.
#[test]
fn a_node_shut_down_takes_its_members_with_it_at_once() {
    check_dependencies(&browser_dir());
    let redis = Redis::start();
    let site = Site::new("chat");
    let slow_to_notice = |redis: &Redis| {
        crate::redis::node(&redis.url())
            .config_toml(sites_toml(
                "[redis]\npresence_timeout_ms = 60000\n[shutdown]\nreadiness_delay_ms = 0\n",
                &[&site],
            ))
            .start()
    };
    let mut a = slow_to_notice(&redis);
    let b = slow_to_notice(&redis);
    let mut ann = member(&a, &site, "ann");
    assert_eq!(join(&mut ann), "1 ann ann");
    let mut bob = member(&b, &site, "bob");
    assert_eq!(join(&mut bob), "2 ann,bob bob");

    a.sigterm();
    assert_eq!(next_change(&mut bob), format!("REMOVED {ROOM} ann"));
    assert!(a.wait_exit(STEP_TIMEOUT).is_some(), "node A exits");
    bob.send(&format!("LIST {ROOM}"));
    assert_eq!(
        bob.expect_prefix(&format!("MEMBERS {ROOM} "), STEP_TIMEOUT),
        "1 bob bob"
    );
    drop(ann);
    bob.send("DONE");
    bob.expect("BYE", STEP_TIMEOUT);
    bob.finish();
}
