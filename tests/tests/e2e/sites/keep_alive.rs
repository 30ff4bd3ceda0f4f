//! `/sse` as the second request of a keep-alive connection (served by hyper, not on the raw
//! socket path): the same refusals, grants and limit answers as a fresh connection. curl asked
//! for two URLs reuses its connection just so.

use std::process::Stdio;

use herald_tests::{Herald, SSE_TIMEOUT, Site, metric_value};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::support::{Bystanders, assert_rejections, publish, start};

/// `curl -s` for `/healthz` and then `path` on one connection; returns the status and the body
/// of the second answer.
async fn second_on_one_connection(herald: &Herald, path: &str) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}\n"])
        .arg(herald.url("/healthz"))
        .arg(herald.url(path))
        .output()
        .await
        .expect("curl is installed by scripts/install-test-deps.sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // "ok", its status, then the second body and its status.
    let (first, second) = text
        .split_once("\n200\n")
        .unwrap_or_else(|| panic!("{path}: /healthz did not answer 200 first: {text:?}"));
    assert!(first.contains("ok"), "{text:?}");
    let (body, status) = second
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("{path}: no second answer: {text:?}"));
    let status = status
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: status {status:?}: {e}"));
    (status, body.to_owned())
}

#[tokio::test]
async fn sse_on_a_reused_connection_is_admitted_like_any_other() {
    let a = Site::new("a").limit("connections", 2);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let b_token = b.token("1", 600);
    let a_token = a.token("1", 600);
    let cases = [
        ("/sse?key=a-key&channel=user:1".to_owned(), 403, "forbidden"),
        (
            format!("/sse?key=a-key&channel=public&token={b_token}"),
            401,
            "token_invalid",
        ),
        (
            format!("/sse?channel=private-x&token={a_token}"),
            403,
            "signature_required",
        ),
        (
            "/sse?key=nope&channel=public".to_owned(),
            404,
            "site_unknown",
        ),
    ];
    for (path, status, code) in &cases {
        let (got, body) = second_on_one_connection(&herald, path).await;
        assert_eq!(got, *status, "{path}: {body}");
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
        assert_eq!(json["error"]["code"], *code, "{path}: {body}");
    }
    bystanders.publish(&herald, "during").await;

    // A good token streams; that stream is a's second connection ...
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sN", "--max-time", "20"])
        .arg(herald.url("/healthz"))
        .arg(herald.url(&format!("/sse?channel=user:1&token={a_token}")))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed by scripts/install-test-deps.sh");
    let mut lines = BufReader::new(curl.stdout.take().expect("stdout")).lines();
    let mut published = false;
    loop {
        let line = tokio::time::timeout(SSE_TIMEOUT, lines.next_line())
            .await
            .expect("an SSE line in time")
            .expect("read")
            .expect("curl ended early");
        if line.starts_with("event: subscribed") && !published {
            publish(&herald, &a, "user:1", r#"{"kept":"alive"}"#).await;
            published = true;
        }
        if line.starts_with("data: ") && line.contains(r#""data":{"kept":"alive"}"#) {
            break;
        }
    }

    // ... so a third is refused the way EventSource understands: 200, event: error, retry.
    let (status, body) = second_on_one_connection(&herald, "/sse?key=a-key&channel=public").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("site_connection_limit"), "{body}");
    assert!(body.contains("retry: 5000"), "{body}");

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    for (site, code) in [
        ("a", "forbidden"),
        ("a", "token_invalid"),
        ("a", "signature_required"),
        ("-", "site_unknown"),
        ("a", "site_connection_limit"),
    ] {
        assert_rejections(&herald, site, code, 1).await;
    }
    let metrics = herald.metrics().await;
    let via_hyper = metric_value(&metrics, "herald_http_requests_total", &[("route", "sse")]);
    assert!(
        via_hyper >= 6.0,
        "every /sse above was served on a reused connection: {via_hyper}"
    );
}
