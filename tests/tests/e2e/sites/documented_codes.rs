//! Every refusal a publisher or a connecting client can provoke, held to the docs: each case is a
//! request and the code it must get, and the test reads the rest from `docs/protocol.md` itself
//! (the code's HTTP status and close code in "Error codes") and checks that the route's own
//! section of the docs names the code. A code Herald answers differently from the docs, or one the
//! route's docs do not mention, fails the test.

use std::collections::HashMap;
use std::net::IpAddr;

use futures_util::StreamExt;
use herald_tests::{Delivery, Herald, Request, Site, Token, WS_TIMEOUT, publish_body, unix_now};
use tokio_tungstenite::tungstenite::Message;

use super::support::{Connect, sse_with_headers, start, ws_handshake};

const PROTOCOL: &str = include_str!("../../../../docs/protocol.md");
const SECURITY: &str = include_str!("../../../../docs/security.md");
const TIMELINES: &str = include_str!("../../../../docs/timelines.md");

/// The routes, each with the sections of the docs that list its refusals.
#[derive(Debug, Clone, Copy)]
enum Route {
    Publish,
    Deliver,
    History,
    Ws,
    Sse,
    Other,
}

impl Route {
    /// The docs sections (file, heading) that must name a code this route answers.
    fn sections(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Route::Publish => vec![(PROTOCOL, "### `POST /api/publish`")],
            // Deliveries refuse credentials "as for publishing".
            Route::Deliver => vec![
                (TIMELINES, "## `POST /api/deliver`"),
                (PROTOCOL, "### `POST /api/publish`"),
            ],
            Route::History => vec![(PROTOCOL, "### `GET /api/history")],
            Route::Ws => vec![
                (PROTOCOL, "## WebSocket: `GET /ws`"),
                (SECURITY, "## Connection refusals"),
            ],
            Route::Sse => vec![(PROTOCOL, "## Server-Sent Events")],
            Route::Other => vec![(PROTOCOL, "### Health and metrics")],
        }
    }
}

/// What a case sends.
enum Attempt {
    Http(Request),
    /// A WebSocket upgrade of this URL with these headers.
    Ws(String, Connect),
    /// An SSE request for this path with these headers.
    Sse(String, Vec<(&'static str, String)>),
}

/// One refusal: what provokes it, and its documented code.
struct Case {
    what: &'static str,
    route: Route,
    attempt: Attempt,
    code: &'static str,
}

/// The "Error codes" table: each code's HTTP status and close code.
fn code_table() -> HashMap<String, (Option<u16>, Option<u16>)> {
    let table = section(PROTOCOL, "## Error codes");
    let cell = |text: &str| text.trim().parse::<u16>().ok();
    table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            let code = cells[1].trim().trim_matches('`').to_owned();
            (code, (cell(cells[2]), cell(cells[3])))
        })
        .collect()
}

/// The text under `heading` (a line starting with it) up to the next heading of its level or
/// above.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("the docs have no section {heading:?}"))
        + 1;
    let level = heading.chars().take_while(|c| *c == '#').count();
    let rest = &doc[start..];
    let mut at = rest.find('\n').map_or(rest.len(), |end| end + 1);
    for line in rest[at..].split_inclusive('\n') {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        at += line.len();
    }
    &rest[..at]
}

/// What one attempt was answered with: the HTTP status and code of a refused request, or the
/// close code and the code of the `error` frame of a refused WebSocket.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Http(u16, String),
    Closed(u16, String),
    /// A WebSocket that was admitted (it got `welcome`): no refusal at all.
    Admitted,
}

async fn attempt(attempt: Attempt) -> Answer {
    match attempt {
        Attempt::Http(request) => {
            let response = request.send().await;
            let code = if response.status >= 400 {
                response.error_code()
            } else {
                String::new()
            };
            Answer::Http(response.status, code)
        }
        Attempt::Sse(path, headers) => {
            let addr = path.split('/').next().unwrap_or_default().to_owned();
            let path = &path[addr.len()..];
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let mut sse = sse_with_headers(addr.parse().expect("an address"), path, &headers).await;
            let code = if sse.status >= 400 {
                sse.error_code().await
            } else {
                String::new()
            };
            Answer::Http(sse.status, code)
        }
        Attempt::Ws(url, options) => {
            let mut stream = match ws_handshake(&url, &options).await {
                Ok(stream) => stream,
                // Refused before the upgrade: read the refusal's body again as a request.
                Err(_) => {
                    let path = url.trim_start_matches("ws://");
                    let (addr, path) = path.split_at(path.find('/').unwrap_or(path.len()));
                    let mut request = Request::get(addr.parse().expect("an address"), path)
                        .header("Connection", "Upgrade")
                        .header("Upgrade", "websocket")
                        .header("Sec-WebSocket-Version", "13")
                        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
                    for (name, value) in &options.headers {
                        request = request.header(name, value);
                    }
                    let response = request.send().await;
                    return Answer::Http(response.status, response.error_code());
                }
            };
            let mut error_code = String::new();
            loop {
                match tokio::time::timeout(WS_TIMEOUT, stream.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let frame: serde_json::Value =
                            serde_json::from_str(&text).expect("a JSON frame");
                        if frame["type"] == "error" {
                            error_code = frame["code"].as_str().unwrap_or_default().to_owned();
                        }
                        if frame["type"] == "welcome" {
                            return Answer::Admitted;
                        }
                    }
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        return Answer::Closed(code, error_code);
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("{url}: no close: {other:?}"),
                }
            }
        }
    }
}

/// Runs every case and checks its answer against the docs; reports every mismatch at once.
async fn check(cases: Vec<Case>) {
    let table = code_table();
    let mut mismatches = Vec::new();
    for case in cases {
        let Some(&(http_status, close_code)) = table.get(case.code) else {
            mismatches.push(format!(
                "{}: `{}` is not in the docs' table",
                case.what, case.code
            ));
            continue;
        };
        let named = case
            .route
            .sections()
            .iter()
            .any(|(doc, heading)| section(doc, heading).contains(&format!("`{}`", case.code)));
        if !named {
            mismatches.push(format!(
                "{}: the docs of {:?} do not name `{}`",
                case.what, case.route, case.code
            ));
        }
        let answer = attempt(case.attempt).await;
        let documented = match (&answer, close_code) {
            (Answer::Closed(..), Some(close)) => Answer::Closed(close, case.code.to_owned()),
            (Answer::Closed(..), None) => Answer::Closed(1008, case.code.to_owned()),
            (Answer::Http(..) | Answer::Admitted, _) => {
                Answer::Http(http_status.unwrap_or_default(), case.code.to_owned())
            }
        };
        if answer != documented {
            mismatches.push(format!(
                "{}: answered {answer:?}, the docs say {documented:?}",
                case.what
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn dev_site_refusals_have_their_documented_codes() {
    let herald = Herald::builder()
        .config_toml(
            "[publish]\nmax_body_bytes = 1024\ntrusted_networks = [\"127.0.0.1/32\"]\n\n\
             [deliver]\nmax_body_bytes = 1024\n",
        )
        .start();
    let addr = herald.addr;
    let post = |path: &str, body: &str| Request::post(addr, path).json_body(body);
    let publish = |body: &str| post("/api/publish", body);
    let deliver = |delivery: Delivery| post("/api/deliver", &delivery.body());
    let good = publish_body("public", "1");
    let http = Attempt::Http;
    let cases = vec![
        Case {
            what: "publish: not JSON",
            route: Route::Publish,
            attempt: http(publish("{")),
            code: "bad_json",
        },
        Case {
            what: "publish: no data",
            route: Route::Publish,
            attempt: http(publish(r#"{"channel":"a"}"#)),
            code: "bad_request",
        },
        Case {
            what: "publish: a bad channel",
            route: Route::Publish,
            attempt: http(publish(&publish_body("a b", "1"))),
            code: "invalid_channel",
        },
        Case {
            what: "publish: GET",
            route: Route::Publish,
            attempt: http(Request::get(addr, "/api/publish")),
            code: "method_not_allowed",
        },
        Case {
            what: "publish: text/plain",
            route: Route::Publish,
            attempt: http(
                Request::post(addr, "/api/publish")
                    .header("Content-Type", "text/plain")
                    .raw_body(good.as_bytes()),
            ),
            code: "unsupported_media_type",
        },
        Case {
            what: "publish: through a proxy",
            route: Route::Publish,
            attempt: http(publish(&good).header("X-Forwarded-For", "203.0.113.7")),
            code: "proxied_dev_site",
        },
        Case {
            what: "publish: from outside the trusted networks",
            route: Route::Publish,
            attempt: http(publish(&good).source(IpAddr::from([127, 0, 0, 2]))),
            code: "forbidden",
        },
        Case {
            what: "publish: over max_body_bytes",
            route: Route::Publish,
            attempt: http(publish(&publish_body(
                "a",
                &format!("\"{}\"", "x".repeat(2000)),
            ))),
            code: "payload_too_large",
        },
        Case {
            what: "publish: a bad Idempotency-Key",
            route: Route::Publish,
            attempt: http(publish(&good).header("Idempotency-Key", "two words")),
            code: "bad_request",
        },
        Case {
            what: "deliver: not JSON",
            route: Route::Deliver,
            attempt: http(post("/api/deliver", "{")),
            code: "bad_json",
        },
        Case {
            what: "deliver: a negative recipient",
            route: Route::Deliver,
            attempt: http(deliver(
                Delivery::new("user", "1").values([serde_json::json!(-1)]),
            )),
            code: "bad_request",
        },
        Case {
            what: "deliver: a recipient with a space",
            route: Route::Deliver,
            attempt: http(deliver(Delivery::new("user", "1").names(["a b"]))),
            code: "invalid_channel",
        },
        Case {
            what: "deliver: an unknown timeline",
            route: Route::Deliver,
            attempt: http(deliver(Delivery::new("home", "1").ids([1]))),
            code: "bad_request",
        },
        Case {
            what: "deliver: text/plain",
            route: Route::Deliver,
            attempt: http(
                Request::post(addr, "/api/deliver")
                    .header("Content-Type", "text/plain")
                    .raw_body(Delivery::user([1], "1").body().as_bytes()),
            ),
            code: "unsupported_media_type",
        },
        Case {
            what: "deliver: through a proxy",
            route: Route::Deliver,
            attempt: http(deliver(Delivery::user([1], "1")).header("Via", "1.1 proxy")),
            code: "proxied_dev_site",
        },
        Case {
            what: "deliver: GET",
            route: Route::Deliver,
            attempt: http(Request::get(addr, "/api/deliver")),
            code: "method_not_allowed",
        },
        Case {
            what: "history: no channel",
            route: Route::History,
            attempt: http(Request::get(addr, "/api/history")),
            code: "missing_channel",
        },
        Case {
            what: "history: a bad channel",
            route: Route::History,
            attempt: http(Request::get(addr, "/api/history?channel=a%20b")),
            code: "invalid_channel",
        },
        Case {
            what: "history: a bad since",
            route: Route::History,
            attempt: http(Request::get(addr, "/api/history?channel=a&since=x")),
            code: "bad_request",
        },
        Case {
            what: "history: POST",
            route: Route::History,
            attempt: http(post("/api/history", "{}")),
            code: "method_not_allowed",
        },
        Case {
            what: "history: through a proxy",
            route: Route::History,
            attempt: http(
                Request::get(addr, "/api/history?channel=a").header("Forwarded", "for=203.0.113.7"),
            ),
            code: "proxied_dev_site",
        },
        Case {
            what: "ws: no upgrade",
            route: Route::Ws,
            attempt: http(Request::get(addr, "/ws")),
            code: "upgrade_required",
        },
        Case {
            what: "ws: through a proxy",
            route: Route::Ws,
            attempt: Attempt::Ws(
                herald.ws_url("/ws"),
                Connect {
                    headers: vec![("X-Forwarded-For", "203.0.113.7".into())],
                    source: None,
                },
            ),
            code: "proxied_dev_site",
        },
        Case {
            what: "sse: no channel",
            route: Route::Sse,
            attempt: Attempt::Sse(format!("{addr}/sse"), vec![]),
            code: "missing_channel",
        },
        Case {
            what: "sse: through a proxy",
            route: Route::Sse,
            attempt: Attempt::Sse(
                format!("{addr}/sse?channel=a"),
                vec![("Via", "1.1 proxy".into())],
            ),
            code: "proxied_dev_site",
        },
        Case {
            what: "an unknown route",
            route: Route::Other,
            attempt: http(Request::get(addr, "/nowhere")),
            code: "not_found",
        },
    ];
    check(cases).await;
}

#[tokio::test]
async fn site_refusals_have_their_documented_codes() {
    let a = Site::new("a")
        .allowed_origins(&["https://a.example"])
        .limit("publish_rate", 1)
        .limit("publish_burst", 10);
    let b = Site::new("b").private();
    let herald = start("", &[&a, &b]);
    let addr = herald.addr;
    let now = unix_now();
    let body = |n: u32| publish_body("public", &n.to_string());
    let signed = |n: u32, ts: u64| a.signed_publish(addr, a.secret(), &ts.to_string(), &body(n));
    // Accepted once, then replayed (the case below).
    let replayed = signed(1, now);
    let _accepted = replayed.clone().send().await;
    // A token naming its site only by `kid`, with an `alg` nobody accepts.
    let alg_none = Token::for_user("1", 600)
        .kid(&a.key)
        .header("alg", "none")
        .sign(a.secret());
    let expired = Token::new("1", now - 60).kid(&a.key).sign(a.secret());
    // More channels than the bucket can ever hold by the time the case runs: refused whole.
    let channels: Vec<String> = (0..1000).map(|n| format!("c{n}")).collect();
    let over_rate = Request::post(addr, "/api/publish")
        .bearer(a.secret())
        .json_body(&serde_json::json!({"channels": channels, "data": 6}).to_string());
    let ws = |query: &str| herald.ws_url(&format!("/ws?{query}"));
    let no_headers = Connect::default;
    let http = Attempt::Http;
    let cases = vec![
        Case {
            what: "publish: no credential",
            route: Route::Publish,
            attempt: http(Request::post(addr, "/api/publish").json_body(&body(2))),
            code: "unauthorized",
        },
        Case {
            what: "publish: a secret of no site",
            route: Route::Publish,
            attempt: http(
                Request::post(addr, "/api/publish")
                    .bearer("secret-of-no-site-0123456789")
                    .json_body(&body(3)),
            ),
            code: "unauthorized",
        },
        Case {
            what: "publish: signed by another secret",
            route: Route::Publish,
            attempt: http(a.signed_publish(addr, b.secret(), &now.to_string(), &body(4))),
            code: "signature_invalid",
        },
        Case {
            what: "publish: signed an hour ago",
            route: Route::Publish,
            attempt: http(signed(5, now - 3600)),
            code: "signature_expired",
        },
        Case {
            what: "publish: a replay",
            route: Route::Publish,
            attempt: http(replayed),
            code: "signature_replayed",
        },
        Case {
            what: "publish: over the publish rate",
            route: Route::Publish,
            attempt: http(over_rate),
            code: "rate_limited",
        },
        Case {
            what: "deliver: no credential",
            route: Route::Deliver,
            attempt: http(Delivery::user([1], "1").request(addr)),
            code: "unauthorized",
        },
        Case {
            what: "history: no credential",
            route: Route::History,
            attempt: http(Request::get(addr, "/api/history?channel=public")),
            code: "unauthorized",
        },
        Case {
            what: "ws: an unknown key",
            route: Route::Ws,
            attempt: Attempt::Ws(ws("key=nope"), no_headers()),
            code: "site_unknown",
        },
        Case {
            what: "ws: no key among two sites",
            route: Route::Ws,
            attempt: Attempt::Ws(ws(""), no_headers()),
            code: "site_unknown",
        },
        Case {
            what: "ws: alg none, site named by kid",
            route: Route::Ws,
            attempt: Attempt::Ws(ws(&format!("token={alg_none}")), no_headers()),
            code: "token_invalid",
        },
        Case {
            what: "ws: a token signed by another site",
            route: Route::Ws,
            attempt: Attempt::Ws(
                ws(&format!(
                    "token={}",
                    Token::for_user("1", 600).kid(&a.key).sign(b.secret())
                )),
                no_headers(),
            ),
            code: "token_invalid",
        },
        Case {
            what: "ws: an expired token",
            route: Route::Ws,
            attempt: Attempt::Ws(ws(&format!("token={expired}")), no_headers()),
            code: "token_expired",
        },
        Case {
            what: "ws: a private site without a token",
            route: Route::Ws,
            attempt: Attempt::Ws(ws(&format!("key={}", b.key)), no_headers()),
            code: "token_required",
        },
        Case {
            what: "ws: a foreign origin",
            route: Route::Ws,
            attempt: Attempt::Ws(
                ws(&format!("key={}", a.key)),
                Connect {
                    headers: vec![("Origin", "https://evil.example".into())],
                    source: None,
                },
            ),
            code: "origin_not_allowed",
        },
        Case {
            what: "sse: an unknown key",
            route: Route::Sse,
            attempt: Attempt::Sse(format!("{addr}/sse?channel=public&key=nope"), vec![]),
            code: "site_unknown",
        },
        Case {
            what: "sse: alg none, site named by kid",
            route: Route::Sse,
            attempt: Attempt::Sse(
                format!("{addr}/sse?channel=public&token={alg_none}"),
                vec![],
            ),
            code: "token_invalid",
        },
        Case {
            what: "sse: a private site without a token",
            route: Route::Sse,
            attempt: Attempt::Sse(format!("{addr}/sse?channel=public&key={}", b.key), vec![]),
            code: "token_required",
        },
        Case {
            what: "sse: another user's timeline",
            route: Route::Sse,
            attempt: Attempt::Sse(format!("{addr}/sse?channel=user:1&key={}", a.key), vec![]),
            code: "forbidden",
        },
    ];
    check(cases).await;
}
