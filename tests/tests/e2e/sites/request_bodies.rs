//! Publish and delivery bodies cost Herald memory and time only once the credential is good
//! (docs/security.md, "Threat model"): a wrong credential is refused from the headers before any
//! body is read; a body must arrive within `publish.body_timeout_secs` (408 `request_timeout`);
//! bodies in flight share `publish.max_body_bytes_in_flight` (503 `overloaded`); and a body must
//! say it is JSON (415 `unsupported_media_type`).

use std::time::{Duration, Instant};

use herald_tests::{
    Herald, PartRequest, Request, Response, Site, metric_value, publish_body, publish_results,
    unix_now,
};

use super::support::{CHANGE_TIMEOUT, POLL, start};

/// The longest wait for an answer that needs no body: generous, for a busy machine, and far
/// shorter than the body that is never sent would take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// No trickle: the body stays as it was sent.
const STILL: (&[u8], Duration) = (b"", Duration::from_secs(1));

/// A request head for `path` with `headers` (each a whole `Name: value` line) and a body it says
/// is `length` bytes long.
fn head(path: &str, headers: &[String], length: usize) -> String {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: herald\r\nContent-Length: {length}\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head
}

async fn answer_within(request: &mut PartRequest, within: Duration, what: &str) -> Response {
    let (trickle, every) = STILL;
    request
        .answer(within, trickle, every)
        .await
        .unwrap_or_else(|| panic!("{what}: no answer within {within:?} though no body is needed"))
}

#[tokio::test]
async fn a_wrong_credential_is_refused_before_the_body_arrives() {
    let a = Site::new("a");
    let herald = start("", &[&a]);
    let now = unix_now();
    let json = "Content-Type: application/json".to_string();
    // (what, headers) for requests whose credential the headers alone condemn.
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("no credential", vec![json.clone()], "unauthorized"),
        (
            "a bearer secret of no site",
            vec![
                json.clone(),
                "Authorization: Bearer secret-of-no-site-0123456789".into(),
            ],
            "unauthorized",
        ),
        (
            "an unknown X-Herald-Key",
            vec![
                json.clone(),
                "X-Herald-Key: no-such-key".into(),
                format!("X-Herald-Timestamp: {now}"),
                format!("X-Herald-Signature: {}", "0".repeat(64)),
            ],
            "unauthorized",
        ),
        (
            "a timestamp an hour old",
            vec![
                json.clone(),
                format!("X-Herald-Key: {}", a.key),
                format!("X-Herald-Timestamp: {}", now - 3600),
                format!("X-Herald-Signature: {}", "0".repeat(64)),
            ],
            "signature_expired",
        ),
        (
            "a signature that is not an HMAC's hex",
            vec![
                json.clone(),
                format!("X-Herald-Key: {}", a.key),
                format!("X-Herald-Timestamp: {now}"),
                "X-Herald-Signature: not-hex".into(),
            ],
            "signature_invalid",
        ),
    ];
    // The bodies are said to be as large as each route takes (1 MiB and 16 MiB by default), and
    // only 10 bytes of them are sent.
    for (path, length) in [("/api/publish", 1_000_000), ("/api/deliver", 16_000_000)] {
        for (what, headers, code) in &cases {
            let what = format!("{path}, {what}");
            let mut request =
                PartRequest::start(herald.addr, &head(path, headers, length), b"{\"channel\"")
                    .await;
            let answer = answer_within(&mut request, ANSWER_TIMEOUT, &what).await;
            assert_eq!(answer.status, 401, "{what}: {}", answer.text());
            assert_eq!(answer.error_code(), *code, "{what}");
        }
    }
    // The right credential is still served, whole bodies and all.
    let response = a
        .publish_request(herald.addr, "public", r#""after""#)
        .send()
        .await;
    publish_results(&response, &["public"]);
}

#[tokio::test]
async fn a_body_that_takes_longer_than_the_deadline_is_answered_408() {
    let a = Site::new("a");
    let herald = start("[publish]\nbody_timeout_secs = 1\n", &[&a]);
    let body = publish_body("public", r#""slow""#);
    let headers = [
        "Content-Type: application/json".to_string(),
        format!("Authorization: Bearer {}", a.secret()),
    ];
    // One byte every 100 ms: the body keeps moving, but would take far longer than the deadline.
    let slow = format!("{body}{}", " ".repeat(200));
    let mut request = PartRequest::start(
        herald.addr,
        &head("/api/publish", &headers, slow.len()),
        b"",
    )
    .await;
    let answer = request
        .answer(ANSWER_TIMEOUT, slow.as_bytes(), Duration::from_millis(100))
        .await
        .expect("a trickled body is answered once the deadline passes");
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.error_code(), "request_timeout");

    // A body that stops arriving altogether gets the same answer.
    let mut stalled = PartRequest::start(
        herald.addr,
        &head("/api/deliver", &headers, 1000),
        b"{\"timeline\"",
    )
    .await;
    let answer = answer_within(&mut stalled, ANSWER_TIMEOUT, "a stalled delivery").await;
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.error_code(), "request_timeout");

    let response = a
        .publish_request(herald.addr, "public", r#""in time""#)
        .send()
        .await;
    publish_results(&response, &["public"]);
    let metrics = herald.metrics().await;
    let timeouts = metric_value(
        &metrics,
        "herald_rejections_total",
        &[("site", "a"), ("reason", "request_timeout")],
    );
    assert_eq!(timeouts, 2.0, "{metrics}");
}

#[tokio::test]
async fn bodies_past_the_budget_in_flight_are_answered_503_overloaded() {
    let a = Site::new("a");
    let top = "[publish]\nmax_body_bytes = 1000\nmax_body_bytes_in_flight = 1500\n\n\
               [deliver]\nmax_body_bytes = 1000\n";
    let herald = start(top, &[&a]);
    let headers = [
        "Content-Type: application/json".to_string(),
        format!("Authorization: Bearer {}", a.secret()),
    ];
    // A body of 1000 bytes, of which only the first arrive for now: it holds 1000 of the 1500.
    let held = format!(
        "{}{}",
        publish_body("public", r#""held""#),
        " ".repeat(1000 - publish_body("public", r#""held""#).len())
    );
    let mut first = PartRequest::start(
        herald.addr,
        &head("/api/publish", &headers, held.len()),
        &held.as_bytes()[..10],
    )
    .await;
    wait_for_bytes_in_flight(&herald, 1000.0).await;

    // Another 1000 bytes do not fit beside it, whatever the route.
    let second = || {
        let body = format!(
            "{}{}",
            publish_body("public", r#""second""#),
            " ".repeat(600)
        );
        Request::post(herald.addr, "/api/publish")
            .bearer(a.secret())
            .json_body(&body)
    };
    let refused = second().send().await;
    refused.assert_error(503, "overloaded");
    assert!(
        refused.header("retry-after").is_some(),
        "503 overloaded says when to retry: {:?}",
        refused.headers
    );
    let delivery = herald_tests::Delivery::user([1], r#""d""#);
    let body = format!("{}{}", delivery.body(), " ".repeat(600));
    Request::post(herald.addr, "/api/deliver")
        .bearer(a.secret())
        .json_body(&body)
        .send()
        .await
        .assert_error(503, "overloaded");

    // The held body completes and is published; its share is given back.
    first.send(&held.as_bytes()[10..]).await;
    let answer = answer_within(&mut first, ANSWER_TIMEOUT, "the held body").await;
    publish_results(&answer, &["public"]);
    wait_for_bytes_in_flight(&herald, 0.0).await;
    publish_results(&second().send().await, &["public"]);
}

/// Waits until `herald_request_body_bytes_in_flight` is `bytes`.
async fn wait_for_bytes_in_flight(herald: &Herald, bytes: f64) {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let metrics = herald.metrics().await;
        let held = metric_value(&metrics, "herald_request_body_bytes_in_flight", &[]);
        if held == bytes {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bodies in flight stayed at {held} bytes, not {bytes}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn publish_and_deliver_take_only_json() {
    // The dev site: what a page on any origin could reach on a developer's machine.
    let herald = Herald::start();
    let body = publish_body("public", r#""hi""#);
    for path in ["/api/publish", "/api/deliver"] {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonp"),
            None,
        ] {
            let mut request = Request::post(herald.addr, path);
            if let Some(content_type) = content_type {
                request = request.header("Content-Type", content_type);
            }
            let response = with_body(request, &body).send().await;
            assert_eq!(
                (response.status, response.error_code().as_str()),
                (415, "unsupported_media_type"),
                "{path} with Content-Type {content_type:?}: {}",
                response.text()
            );
        }
    }
    // Parameters and letter case do not matter.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let response = with_body(
            Request::post(herald.addr, "/api/publish").header("Content-Type", content_type),
            &body,
        )
        .send()
        .await;
        publish_results(&response, &["public"]);
    }
}

/// `request` with `body` and no `Content-Type` of its own (`Request::json_body` would add one).
fn with_body(request: Request, body: &str) -> Request {
    request.raw_body(body.as_bytes())
}
