//! Publishing credentials: the bearer secret selects its site, signed requests name it with
//! `X-Herald-Key`; every wrong, expired or replayed credential answers its 401 and publishes
//! nothing, while the clients of both sites keep receiving.

use herald_tests::{Request, Site, WS_TIMEOUT, publish_body, publish_results, unix_now};

use super::support::{Bystanders, assert_rejections, connect, history, start};

/// Two sites; `a` has two secrets (both accepted).
fn sites() -> (Site, Site) {
    let a = Site::new("a").with_secrets(&[
        &Site::make_secret("a", "one"),
        &Site::make_secret("a", "two"),
    ]);
    (a, Site::new("b"))
}

#[tokio::test]
async fn wrong_publish_credentials_answer_401_and_publish_nothing() {
    let (a, b) = sites();
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let now = unix_now();
    let ts = now.to_string();
    let body = |n: u32| publish_body("public", &format!(r#"{{"attempt":{n}}}"#));
    let post = || Request::post(herald.addr, "/api/publish");
    let nobody = "secret-of-no-site-0123456789abcdef";

    // (request, status, code, site label of the rejection)
    let cases: Vec<(&str, Request, &str, &str)> = vec![
        (
            "no credential",
            post().json_body(&body(1)),
            "unauthorized",
            "-",
        ),
        (
            "a bearer secret of no site",
            post().bearer(nobody).json_body(&body(2)),
            "unauthorized",
            "-",
        ),
        (
            "a site's key as bearer",
            post().bearer(&a.key).json_body(&body(3)),
            "unauthorized",
            "-",
        ),
        (
            "an unknown X-Herald-Key",
            Site {
                key: "no-such-key".into(),
                ..a.clone()
            }
            .signed_publish(herald.addr, a.secret(), &ts, &body(4)),
            "unauthorized",
            "-",
        ),
        (
            "a signature by no secret",
            a.signed_publish(herald.addr, nobody, &ts, &body(5)),
            "signature_invalid",
            "a",
        ),
        (
            "a signature by site b's secret with site a's key",
            a.signed_publish(herald.addr, b.secret(), &ts, &body(6)),
            "signature_invalid",
            "a",
        ),
        (
            "a body changed after signing",
            {
                let signed = herald_tests::request_signature(
                    a.secret(),
                    "POST",
                    "/api/publish",
                    &ts,
                    "",
                    &body(7),
                );
                post()
                    .header("X-Herald-Key", &a.key)
                    .header("X-Herald-Timestamp", &ts)
                    .header("X-Herald-Signature", &signed)
                    .json_body(&body(70))
            },
            "signature_invalid",
            "a",
        ),
        (
            "a signature of another path",
            {
                let signed = herald_tests::request_signature(
                    a.secret(),
                    "POST",
                    "/api/history",
                    &ts,
                    "",
                    &body(8),
                );
                post()
                    .header("X-Herald-Key", &a.key)
                    .header("X-Herald-Timestamp", &ts)
                    .header("X-Herald-Signature", &signed)
                    .json_body(&body(8))
            },
            "signature_invalid",
            "a",
        ),
        (
            "a timestamp 400 s old (window 300 s)",
            a.signed_publish(herald.addr, a.secret(), &(now - 400).to_string(), &body(9)),
            "signature_expired",
            "a",
        ),
        (
            "a timestamp 400 s ahead",
            a.signed_publish(herald.addr, a.secret(), &(now + 400).to_string(), &body(10)),
            "signature_expired",
            "a",
        ),
        (
            "an unparsable timestamp",
            a.signed_publish(herald.addr, a.secret(), "yesterday", &body(11)),
            "signature_expired",
            "a",
        ),
        (
            "no timestamp",
            {
                let signed = herald_tests::request_signature(
                    a.secret(),
                    "POST",
                    "/api/publish",
                    "",
                    "",
                    &body(12),
                );
                post()
                    .header("X-Herald-Key", &a.key)
                    .header("X-Herald-Signature", &signed)
                    .json_body(&body(12))
            },
            "signature_expired",
            "a",
        ),
    ];
    let mut expected: Vec<(&str, &str, u32)> = Vec::new();
    for (what, request, code, site) in cases {
        request.send().await.assert_error(401, code);
        bystanders.publish(&herald, what).await;
        match expected
            .iter_mut()
            .find(|(c, s, _)| *c == code && *s == site)
        {
            Some((_, _, n)) => *n += 1,
            None => expected.push((code, site, 1)),
        }
    }
    bystanders.assert_received().await;
    for (code, site, n) in expected {
        assert_rejections(&herald, site, code, n).await;
    }
}

#[tokio::test]
async fn a_signed_publish_is_accepted_once_and_its_replay_is_refused() {
    let (a, b) = sites();
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    let ts = unix_now().to_string();

    let data = r#"{"signed":"once"}"#;
    let request = a.signed_publish(herald.addr, a.secret(), &ts, &publish_body("public", data));
    let first = request.clone().send().await;
    publish_results(&first, &["public"]);
    bystanders.published(0, data);
    bystanders.publish(&herald, "between").await;

    request.send().await.assert_error(401, "signature_replayed");
    bystanders.publish(&herald, "after the replay").await;

    // The second secret is accepted as well, signed and as bearer; a different body at the same
    // second is a different signature, not a replay.
    let second = &a.secrets[1];
    for (i, request) in [
        a.signed_publish(
            herald.addr,
            second,
            &ts,
            &publish_body("public", r#"{"second":1}"#),
        ),
        a.signed_publish(
            herald.addr,
            a.secret(),
            &ts,
            &publish_body("public", r#"{"second":2}"#),
        ),
        Request::post(herald.addr, "/api/publish")
            .bearer(second)
            .json_body(&publish_body("public", r#"{"second":3}"#)),
    ]
    .into_iter()
    .enumerate()
    {
        let response = request.send().await;
        publish_results(&response, &["public"]);
        bystanders.published(0, &format!(r#"{{"second":{}}}"#, i + 1));
    }
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "signature_replayed", 1).await;
}

#[tokio::test]
async fn history_needs_the_sites_credential_and_shows_only_its_messages() {
    let (a, b) = sites();
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "one").await;

    Request::get(herald.addr, "/api/history?channel=public")
        .send()
        .await
        .assert_error(401, "unauthorized");
    Request::get(herald.addr, "/api/history?channel=public")
        .bearer("secret-of-no-site-0123456789abcdef")
        .send()
        .await
        .assert_error(401, "unauthorized");

    let path = "/api/history?channel=public";
    let signed = herald_tests::signed_request(
        herald.addr,
        "GET",
        path,
        "",
        &a.key,
        a.secret(),
        &unix_now().to_string(),
    );
    let response = signed.clone().send().await;
    assert_eq!(response.status, 200, "signed history: {}", response.text());
    let json = response.json();
    let messages = json["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "only site a's message: {json}");
    assert_eq!(messages[0]["data"]["site"], "a", "{json}");
    signed.send().await.assert_error(401, "signature_replayed");

    let b_history = history(&herald, &b, "public").await;
    let messages = b_history["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "only site b's message: {b_history}");
    assert_eq!(messages[0]["data"]["site"], "b", "{b_history}");

    bystanders.publish(&herald, "two").await;
    bystanders.assert_received().await;
}

#[tokio::test]
async fn the_signature_window_is_configurable() {
    let (a, b) = sites();
    let herald = start("[publish]\nsignature_window_secs = 5\n", &[&a, &b]);
    let mut ws = connect(&herald, &a).await;
    ws.subscribe("public").await;
    let now = unix_now();
    a.signed_publish(
        herald.addr,
        a.secret(),
        &(now - 30).to_string(),
        &publish_body("public", r#""too old""#),
    )
    .send()
    .await
    .assert_error(401, "signature_expired");
    let response = a
        .signed_publish(
            herald.addr,
            a.secret(),
            &(now - 1).to_string(),
            &publish_body("public", r#""in time""#),
        )
        .send()
        .await;
    let position = publish_results(&response, &["public"]).remove(0);
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (message.position, message.data.as_str()),
        (position, r#""in time""#),
        "only the timestamp within the window was published"
    );
}
