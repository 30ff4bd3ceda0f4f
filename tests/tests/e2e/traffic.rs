//! Per-site and per-user traffic accounting (docs/operations.md,
//! "Accounting"): `GET /api/admin/traffic` ranks a heavy user first among
//! more light users than its sketch has slots, its totals are what was
//! published and delivered, `/metrics` carries per-site totals and never a
//! user, and the admin route refuses everyone without `admin.secret`.
//! What reaches each user's connections is ranked too, with their time
//! connected, and the site's connection time is summed.

use std::time::Duration;

use herald_tests::{Delivery, Herald, Request, Site, WsClient, sites_toml};
use serde_json::{Value, json};

const ADMIN: &str = "an-admin-secret-of-some-length";
const WAIT: Duration = Duration::from_secs(5);

/// Publishes `data` to `channels` of `site`; asserts a 200.
async fn publish(herald: &Herald, site: &Site, channels: &[String], data: &str) {
    let body = format!(r#"{{"channels":{},"data":{data}}}"#, json!(channels));
    let response = Request::post(herald.addr, "/api/publish")
        .bearer(site.secret())
        .json_body(&body)
        .send()
        .await;
    assert_eq!(response.status, 200, "publish: {}", response.text());
}

async fn traffic(herald: &Herald) -> Value {
    let response = Request::get(herald.addr, "/api/admin/traffic?top=5")
        .bearer(ADMIN)
        .send()
        .await;
    assert_eq!(response.status, 200, "traffic: {}", response.text());
    response.json()
}

#[tokio::test]
async fn traffic_ranks_a_heavy_user_first_and_totals_what_was_produced() {
    let a = Site::new("a");
    let b = Site::new("b");
    let top =
        format!("[admin]\nsecret = \"{ADMIN}\"\n[accounting]\ntop_users = 8\nsplit_share = 0.6\n");
    let herald = Herald::builder()
        .config_toml(sites_toml(&top, &[&a, &b]))
        .start();

    // Site a: 40 light users (five times the sketch's slots) with one
    // message each, a heavy one with 30 to their timeline, and a channel
    // that is nobody's.
    let light = r#""light""#; // 7 bytes
    let heavy = r#""a heavier notice""#; // 18 bytes
    for user in 0..40 {
        publish(&herald, &a, &[format!("user:light{user}")], light).await;
        if user % 4 == 0 {
            publish(&herald, &a, &["user:heavy".into(), "public".into()], heavy).await;
        }
    }
    for _ in 0..20 {
        publish(&herald, &a, &["user:heavy".into()], heavy).await;
    }
    // Deliveries to timelines: the heavy user and three light ones, five times.
    for _ in 0..5 {
        let delivery = Delivery::new("user", heavy)
            .names(["heavy", "light1", "light2", "light3"])
            .bearer(a.secret());
        assert_eq!(delivery.send(herald.addr).await.status, 200);
    }
    // Site b: one small publish.
    publish(&herald, &b, &["user:someone".into()], light).await;

    let report = traffic(&herald).await;
    let site_a = &report["sites"]["a"];
    // 40 light + 10 × 2 (heavy and public) + 20 heavy + 5 × 4 delivered.
    assert_eq!(site_a["messages_produced"], 40 + 20 + 20 + 20, "{site_a}");
    assert_eq!(
        site_a["bytes_produced"],
        40 * 7 + 20 * 18 + 20 * 18 + 20 * 18,
        "{site_a}"
    );
    for measure in ["messages", "bytes"] {
        let ranked = &site_a["top_users"][measure];
        assert_eq!(ranked["top"][0]["user"], "heavy", "{measure}: {ranked}");
        assert!(ranked["slots"].as_u64().unwrap() <= 8, "{ranked}");
        assert!(ranked["top"].as_array().unwrap().len() <= 5, "{ranked}");
    }
    // The heavy user's true count (10 + 20 + 5) is within the error bound
    // below its estimate.
    let first = &site_a["top_users"]["messages"]["top"][0];
    let count = first["count"].as_u64().unwrap();
    let bound = site_a["top_users"]["messages"]["error_bound"]
        .as_u64()
        .unwrap();
    assert!(count >= 35 && count - 35 <= bound, "{first} bound {bound}");
    assert!(site_a["sketch"]["memory_bytes"].as_u64().unwrap() > 0);
    // Site a produced nearly everything: flagged to split out; b is not.
    assert_eq!(site_a["split_out"], true, "{site_a}");
    let site_b = &report["sites"]["b"];
    assert_eq!(site_b["messages_produced"], 1);
    assert_eq!(site_b["split_out"], false, "{site_b}");
    assert_eq!(site_b["top_users"]["messages"]["top"][0]["user"], "someone");

    // /metrics has per-site totals and not one user.
    let metrics = herald.metrics().await;
    assert!(
        metrics.contains(r#"herald_site_messages_produced_total{site="a"} 100"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"herald_site_messages_produced_total{site="b"} 1"#));
    assert!(metrics.contains(r#"herald_site_bytes_produced_total{site="b"} 7"#));
    assert!(metrics.contains(r#"herald_accounting_sketch_bytes{site="a"}"#));
    for user in ["heavy", "light1", "someone"] {
        assert!(!metrics.contains(user), "{user} in /metrics");
    }
}

#[tokio::test]
async fn traffic_ranks_the_user_whose_connections_receive_most() {
    let site = Site::new("a");
    // A one-second ping interval: connections report on each tick.
    let top = format!("[admin]\nsecret = \"{ADMIN}\"\n[connection]\nping_interval_secs = 1\n");
    let herald = Herald::builder()
        .config_toml(sites_toml(&top, &[&site]))
        .start();
    let key = &site.key;
    let connect = |user: &str, channel: &str| {
        let token = site.token(user, 600);
        herald.ws_url(&format!("/ws?key={key}&token={token}&channel={channel}"))
    };
    // The reader follows a busy channel on two connections; the lurker a
    // quiet one; an anonymous client the busy one too.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut ws = WsClient::connect(&connect("reader", "busy")).await;
        ws.next_json(WAIT).await;
        readers.push(ws);
    }
    let mut lurker = WsClient::connect(&connect("lurker", "quiet")).await;
    lurker.next_json(WAIT).await;
    let mut anonymous =
        WsClient::connect(&herald.ws_url(&format!("/ws?key={key}&channel=busy"))).await;
    anonymous.next_json(WAIT).await;

    let notice = r#""a notice of some length""#; // 25 bytes
    for _ in 0..30 {
        publish(&herald, &site, &["busy".into()], notice).await;
    }
    publish(&herald, &site, &["quiet".into()], notice).await;
    for ws in readers.iter_mut().chain([&mut anonymous]) {
        for _ in 0..30 {
            ws.next_message(WAIT).await;
        }
    }
    lurker.next_message(WAIT).await;
    // The lurker leaves: what it had not reported yet is reported as it ends.
    lurker.close().await;

    // Within a few ticks every connection has reported.
    let mut report = Value::Null;
    for _ in 0..50 {
        report = traffic(&herald).await;
        if report["sites"]["a"]["deliveries_received"] == 30 * 3 + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = &report["sites"]["a"];
    assert_eq!(a["deliveries_received"], 30 * 3 + 1, "{a}");
    assert_eq!(a["bytes_received"], (30 * 3 + 1) * 25, "{a}");
    let received = &a["top_users"]["deliveries_received"]["top"];
    assert_eq!(received[0]["user"], "reader", "{a}");
    assert_eq!(received[0]["count"], 60, "{a}");
    assert_eq!(received[1]["user"], "lurker", "{a}");
    assert_eq!(received[1]["count"], 1, "{a}");
    assert_eq!(a["top_users"]["bytes_received"]["top"][0]["count"], 60 * 25);
    // The reader's two connections have each been open about as long as
    // the test has run; the site's sampled time counts all four.
    let seconds = &a["top_users"]["connection_seconds"]["top"];
    assert_eq!(seconds[0]["user"], "reader", "{a}");
    assert!(seconds[0]["count"].as_f64().unwrap() > 0.5, "{a}");
    assert!(a["connection_seconds"].as_f64().unwrap() >= 1.0, "{a}");

    let metrics = herald.metrics().await;
    assert!(
        metrics.contains(r#"herald_site_deliveries_received_total{site="a"} 91"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"herald_site_connection_seconds_total{site="a"}"#));
    assert!(!metrics.contains("reader"), "a user in /metrics");
}

#[tokio::test]
async fn traffic_admin_route_refuses_without_the_admin_secret() {
    let site = Site::new("a");
    // No admin.secret: the route does not exist, whatever is sent.
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&site]))
        .start();
    for request in [
        Request::get(herald.addr, "/api/admin/traffic"),
        Request::get(herald.addr, "/api/admin/traffic").bearer(site.secret()),
    ] {
        request.send().await.assert_error(404, "not_found");
    }
    drop(herald);

    let top = format!("[admin]\nsecret = \"{ADMIN}\"\n");
    let herald = Herald::builder()
        .config_toml(sites_toml(&top, &[&site]))
        .start();
    let path = "/api/admin/traffic";
    Request::get(herald.addr, path)
        .send()
        .await
        .assert_error(401, "unauthorized");
    // A site's publish secret is not the admin's.
    Request::get(herald.addr, path)
        .bearer(site.secret())
        .send()
        .await
        .assert_error(401, "unauthorized");
    Request::get(herald.addr, path)
        .bearer(&ADMIN[1..])
        .send()
        .await
        .assert_error(401, "unauthorized");
    Request::post(herald.addr, path)
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(405, "method_not_allowed");
    Request::get(herald.addr, "/api/admin/traffic?top=lots")
        .bearer(ADMIN)
        .send()
        .await
        .assert_error(400, "bad_request");
    let report = traffic(&herald).await;
    assert_eq!(report["sites"], json!({}), "{report}");
}

#[tokio::test]
async fn traffic_on_the_dev_site_answers_loopback_with_the_admin_secret() {
    let herald = Herald::builder()
        .config_toml(format!("[admin]\nsecret = \"{ADMIN}\"\n"))
        .start();
    herald.publish("user:evan", r#""hello""#).await;
    Request::get(herald.addr, "/api/admin/traffic")
        .send()
        .await
        .assert_error(401, "unauthorized");
    let report = traffic(&herald).await;
    let site = &report["sites"]["default"];
    assert_eq!(site["top_users"]["messages"]["top"][0]["user"], "evan");
}
