//! Replay protection across nodes (docs/security.md): on the Redis engine every node records the
//! signatures it accepts in Redis, so a recorded signed request is accepted once by the whole
//! deployment, not once per node, and not again after a restart.

use herald_tests::{
    Herald, Redis, Request, Site, WS_TIMEOUT, publish_body, publish_results, request_signature,
    sites_toml, unix_now,
};

use super::support::connect;

#[tokio::test]
async fn a_signed_request_is_accepted_once_by_all_nodes_and_after_a_restart() {
    let redis = Redis::start();
    let a = Site::new("a");
    let node = || -> Herald {
        Herald::builder()
            .arg("--engine")
            .arg("redis")
            .arg("--redis-url")
            .arg(redis.url())
            .config_toml(sites_toml("", &[&a]))
            .start()
    };
    let (one, two) = (node(), node());
    let mut watcher = connect(&two, &a).await;
    watcher.subscribe("public").await;

    let ts = unix_now().to_string();
    let body = publish_body("public", r#""once""#);
    let recorded = |herald: &Herald| {
        Request::post(herald.addr, "/api/publish")
            .header("Idempotency-Key", "notice-1")
            .json_body(&body)
            .signed(&a.key, a.secret(), &ts)
    };
    let position = publish_results(&recorded(&one).send().await, &["public"]).remove(0);
    recorded(&two)
        .send()
        .await
        .assert_error(401, "signature_replayed");

    // After a restart the node knows it too: the record is in Redis, not in the process.
    drop(one);
    let one = node();
    recorded(&one)
        .send()
        .await
        .assert_error(401, "signature_replayed");

    // The Idempotency-Key is signed: changed or dropped after signing, the request is forged.
    let signature = request_signature(a.secret(), "POST", "/api/publish", &ts, "notice-2", &body);
    for (what, key) in [("changed", Some("notice-3")), ("dropped", None)] {
        let mut forged = Request::post(two.addr, "/api/publish")
            .header("X-Herald-Key", &a.key)
            .header("X-Herald-Timestamp", &ts)
            .header("X-Herald-Signature", &signature);
        if let Some(key) = key {
            forged = forged.header("Idempotency-Key", key);
        }
        let response = forged.json_body(&body).send().await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (401, "signature_invalid"),
            "an Idempotency-Key {what} after signing: {}",
            response.text()
        );
    }

    // Only the one accepted publish was delivered.
    let message = watcher.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (message.position, message.data.as_str()),
        (position, r#""once""#)
    );
    let after = publish_results(
        &a.publish_request(one.addr, "public", r#""next""#)
            .send()
            .await,
        &["public"],
    )
    .remove(0);
    let message = watcher.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (message.position, message.data.as_str()),
        (after, r#""next""#),
        "nothing was delivered between the accepted request and the next one"
    );
}
