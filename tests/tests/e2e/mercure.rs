//! The Mercure hub (`/.well-known/mercure`, docs/compat.md): npm `eventsource` subscribes as a
//! page written for a Mercure hub does and gets public updates, private ones only with a JWT
//! whose `subscribe` claim allows them (cookie `mercureAuthorization` or Bearer), and, after its
//! connection is cut, what it missed through its own `Last-Event-ID`; selectors on the wire
//! (several topics, URI templates, `*`, `match=`); resuming from the header, `lastEventID`,
//! `last_event_id` and `earliest`, with the `Last-Event-ID` answer headers; the zero-config dev
//! site with Mercure's development key; a private site; every refusal (400, 401, 403, 413, 415)
//! while another subscriber keeps receiving; streams on fresh connections (off hyper) and on
//! reused ones (hyper's) answering the same; shutdown's `retry:`; and two nodes on Redis.

use std::{net::SocketAddr, time::Duration};

use herald_tests::{
    Herald, Redis, Request, Response, Site, SseClient, Token, sites_toml, unix_now,
};
use serde_json::{Value, json};

use crate::node_script::{Node, browser_dir, check_dependencies};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a subscriber is watched for an update it must not get.
const QUIET: Duration = Duration::from_millis(500);

/// The key of the configured site's Mercure JWTs (`mercure_keys`).
const KEY: &str = "mercure-jwt-key-0123456789";
/// Mercure's development key, which the zero-config dev site takes.
const DEV_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
/// The Mercure conformance suite's publisher token: `{"mercure":{"publish":["*"],
/// "subscribe":["*"]}}` signed with [`DEV_KEY`].
const CONFORMANCE_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdLCJzdWJzY3JpYmUiOlsiKiJdfX0.bVXdlWXwfw9ySx7-iV5OpUSHo34RkjUdVzDLBcc6l_g";

/// A Mercure JWT: `claims` (the `mercure` claim, `exp` …) signed HS256 with `key`.
fn mint(key: &str, claims: Value) -> String {
    let mut token = Token::new("unused", 0).without("sub").without("exp");
    for (name, value) in claims.as_object().expect("claims are an object") {
        token = token.claim(name, value.clone());
    }
    token.sign(key)
}

/// A publisher's JWT for `selectors`.
fn publisher(key: &str, selectors: &[&str]) -> String {
    mint(key, json!({"mercure": {"publish": selectors}}))
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST /.well-known/mercure` of `pairs` with `jwt` as bearer (none with `None`).
async fn publish(addr: SocketAddr, jwt: Option<&str>, pairs: &[(&str, &str)]) -> Response {
    let mut request = Request::post(addr, "/.well-known/mercure")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .raw_body(form(pairs).as_bytes());
    if let Some(jwt) = jwt {
        request = request.bearer(jwt);
    }
    request.send().await
}

/// Publishes and answers the update's id; panics unless the hub answered 200.
async fn published(addr: SocketAddr, jwt: &str, pairs: &[(&str, &str)]) -> String {
    let response = publish(addr, Some(jwt), pairs).await;
    assert_eq!(response.status, 200, "publish: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    response.text()
}

/// A site whose Mercure JWTs are signed with [`KEY`], as TOML.
fn site_toml(site: &Site) -> String {
    format!("{}mercure_keys = [\"{KEY}\"]\n", sites_toml("", &[site]))
}

/// `GET path` as an SSE request (URL-encoded by the caller).
async fn subscribe(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> SseClient {
    let client = SseClient::connect(addr, path, last_event_id).await;
    client.assert_stream();
    client
}

/// The next update a subscriber gets: (id, type, data).
async fn next_update(client: &mut SseClient) -> (String, String, String) {
    let event = client.next_event(EVENT_TIMEOUT).await;
    (event.id, event.event, event.data)
}

/// The script's lines, taken by prefix in the order each subscriber got them: subscribers
/// print concurrently, so a line for one must not be lost while waiting for another's.
struct Lines {
    node: Node,
    /// Lines read while waiting for others.
    pending: Vec<String>,
}

impl Lines {
    /// The rest of the next line that starts with `prefix`.
    fn next(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(at) = self.pending.iter().position(|l| l.starts_with(prefix)) {
            return self.pending.remove(at)[prefix.len()..].to_owned();
        }
        loop {
            let line = self.node.expect_prefix("", timeout);
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
            self.pending.push(line);
        }
    }

    /// Waits for the line `want`.
    fn expect(&mut self, want: &str, timeout: Duration) {
        assert_eq!(self.next(want, timeout), "");
    }

    /// The next update subscriber `name` got: `<id> <type> <data as JSON>`.
    fn event(&mut self, name: &str) -> String {
        self.next(&format!("EVENT {name} "), EVENT_TIMEOUT)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_gets_public_and_private_updates_and_recovers_after_a_cut() {
    let dir = browser_dir();
    check_dependencies(&dir);
    assert!(
        dir.join("node_modules/eventsource/package.json").is_file(),
        "npm eventsource is missing: run `scripts/install-test-deps.sh` first"
    );
    let site = Site::new("books");
    let herald = Herald::builder().config_toml(site_toml(&site)).start();
    let addr = herald.addr;
    let writer = publisher(KEY, &["https://example.com/{+any}"]);
    let mut node = Lines {
        node: Node::spawn(
            &dir,
            "mercure.mjs",
            &[&herald.url("/.well-known/mercure?key=books-key")],
        ),
        pending: Vec::new(),
    };
    node.node.send("SUB anon - https://example.com/books/{id}");
    node.expect("OPEN anon", READY_TIMEOUT);
    let reader = mint(
        KEY,
        json!({"mercure": {"subscribe": ["https://example.com/books/{id}"]}}),
    );
    node.node.send(&format!(
        "SUB reader cookie:{reader} https://example.com/books/{{id}} https://example.com/authors/1"
    ));
    node.expect("OPEN reader", READY_TIMEOUT);
    let bearer = mint(
        KEY,
        json!({"mercure": {"subscribe": ["https://example.com/authors/{id}"]}}),
    );
    node.node.send(&format!(
        "SUB other bearer:{bearer} https://example.com/books/{{id}}"
    ));
    node.expect("OPEN other", READY_TIMEOUT);

    // A public update reaches every subscriber whose selectors pick it; its `retry` shortens
    // the reconnect below.
    let first = published(
        addr,
        &writer,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "first"),
            ("retry", "300"),
        ],
    )
    .await;
    assert!(first.starts_with("urn:uuid:"), "{first}");
    for name in ["anon", "reader", "other"] {
        let event = node.event(name);
        assert_eq!(event, format!("{first} message \"first\""), "{name}");
    }

    // A private update reaches only the JWT whose subscribe claim covers its topic; a later
    // public one shows the others skipped it.
    let secret = published(
        addr,
        &writer,
        &[
            ("topic", "https://example.com/books/2"),
            ("data", "secret\nof two lines"),
            ("private", "on"),
            ("id", "book-2-secret"),
        ],
    )
    .await;
    assert_eq!(secret, "book-2-secret", "the publisher's id is the answer");
    let marker = published(
        addr,
        &writer,
        &[
            ("topic", "https://example.com/books/3"),
            ("data", "marker"),
            ("type", "note"),
        ],
    )
    .await;
    assert_eq!(
        node.event("reader"),
        "book-2-secret message \"secret\\nof two lines\""
    );
    for name in ["reader", "anon", "other"] {
        let event = node.event(name);
        assert_eq!(event, format!("{marker} note \"marker\""), "{name}");
    }
    let author = published(
        addr,
        &writer,
        &[
            ("topic", "https://example.com/authors/1"),
            ("data", "author"),
        ],
    )
    .await;
    assert_eq!(node.event("reader"), format!("{author} message \"author\""));

    // Cut the reader off; what is published meanwhile comes back through its Last-Event-ID.
    node.node.send("CUT reader");
    node.expect("CUT reader", EVENT_TIMEOUT);
    let missed_public = published(
        addr,
        &writer,
        &[
            ("topic", "https://example.com/books/4"),
            ("data", "missed 1"),
        ],
    )
    .await;
    let missed_private = published(
        addr,
        &writer,
        &[
            ("topic", "https://example.com/books/5"),
            ("data", "missed 2"),
            ("private", "1"),
        ],
    )
    .await;
    // The others carry on meanwhile.
    assert_eq!(
        node.event("anon"),
        format!("{missed_public} message \"missed 1\"")
    );
    node.node.send("HEAL reader");
    node.expect("OPEN reader", READY_TIMEOUT);
    assert_eq!(
        node.event("reader"),
        format!("{missed_public} message \"missed 1\"")
    );
    assert_eq!(
        node.event("reader"),
        format!("{missed_private} message \"missed 2\"")
    );
    let after = published(
        addr,
        &writer,
        &[("topic", "https://example.com/books/6"), ("data", "after")],
    )
    .await;
    assert_eq!(
        node.event("reader"),
        format!("{after} message \"after\""),
        "live again, with nothing twice"
    );
    assert_eq!(
        node.event("anon"),
        format!("{after} message \"after\""),
        "anon never got the private updates"
    );
    node.node.send("DONE");
    node.expect("BYE", EVENT_TIMEOUT);
    node.node.finish();
}

#[tokio::test]
async fn the_zero_config_hub_takes_the_mercure_dev_key_and_resumes() {
    let herald = Herald::start();
    let addr = herald.addr;
    let mut all = subscribe(addr, "/.well-known/mercure?topic=*", None).await;
    assert_eq!(all.header("last-event-id"), Some("earliest"));
    assert_eq!(all.header("mercure-last-event-id"), Some("earliest"));

    let first = published(
        addr,
        CONFORMANCE_JWT,
        &[("topic", "https://example.com/a"), ("data", "one")],
    )
    .await;
    assert!(
        first.starts_with("urn:uuid:") && first.len() == 45,
        "{first}"
    );
    assert_eq!(
        next_update(&mut all).await,
        (first.clone(), "message".into(), "one".into())
    );
    let second = published(
        addr,
        CONFORMANCE_JWT,
        &[("topic", "raw string"), ("data", "two"), ("id", "custom-2")],
    )
    .await;
    assert_eq!(second, "custom-2");
    assert_eq!(next_update(&mut all).await.0, "custom-2");

    // Resuming after `first`, by the header and by both query spellings.
    let after_first = [
        (
            "/.well-known/mercure?topic=*".to_string(),
            Some(first.as_str()),
        ),
        (
            format!("/.well-known/mercure?topic=*&lastEventID={first}"),
            None,
        ),
        (
            format!("/.well-known/mercure?match=raw+string&last_event_id={first}"),
            None,
        ),
    ];
    for (path, header) in &after_first {
        let mut resumed = subscribe(addr, path, *header).await;
        assert_eq!(
            resumed.header("last-event-id"),
            Some(first.as_str()),
            "{path}"
        );
        assert_eq!(
            resumed.header("mercure-last-event-id"),
            Some(first.as_str())
        );
        assert_eq!(next_update(&mut resumed).await.0, "custom-2", "{path}");
    }
    // `earliest` replays everything kept; an id the hub does not know replays nothing.
    let mut earliest = subscribe(addr, "/.well-known/mercure?topic=*", Some("earliest")).await;
    assert_eq!(earliest.header("last-event-id"), Some("earliest"));
    assert_eq!(next_update(&mut earliest).await.0, first);
    assert_eq!(next_update(&mut earliest).await.0, "custom-2");
    let mut unknown = subscribe(addr, "/.well-known/mercure?topic=*", Some("nope")).await;
    assert_eq!(unknown.header("last-event-id"), Some("custom-2"));
    let mut fresh = subscribe(addr, "/.well-known/mercure?topic=*", None).await;
    assert_eq!(fresh.header("last-event-id"), Some("custom-2"));
    let third = published(addr, CONFORMANCE_JWT, &[("topic", "t"), ("data", "3")]).await;
    assert_eq!(next_update(&mut unknown).await.0, third);
    assert_eq!(next_update(&mut fresh).await.0, third);

    // Without a JWT, a subscriber of the dev site gets public updates only; with one signed
    // with the development key whose subscribe claim covers the topic, private ones too.
    let mut anonymous = subscribe(addr, "/.well-known/mercure?topic=*", None).await;
    let reader = mint(DEV_KEY, json!({"mercure": {"subscribe": ["p"]}}));
    let mut allowed = subscribe(
        addr,
        &format!("/.well-known/mercure?topic=*&authorization={reader}"),
        None,
    )
    .await;
    let private = published(
        addr,
        CONFORMANCE_JWT,
        &[("topic", "p"), ("data", "x"), ("private", "")],
    )
    .await;
    let public = published(addr, CONFORMANCE_JWT, &[("topic", "p"), ("data", "y")]).await;
    assert_eq!(next_update(&mut allowed).await.0, private);
    assert_eq!(next_update(&mut allowed).await.0, public);
    assert_eq!(next_update(&mut anonymous).await.0, public);
}

#[tokio::test]
async fn selectors_pick_topics_on_the_wire() {
    let herald = Herald::start();
    let addr = herald.addr;
    // Several selectors on one connection: a URI template, an exact topic, and `match=`.
    let mut several = subscribe(
        addr,
        "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D\
         &topic=urn%3Aone&match=https%3A%2F%2Fexample.com%2Fexact",
        None,
    )
    .await;
    let mut template_only = subscribe(
        addr,
        "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2F%7B%2Bpath%7D",
        None,
    )
    .await;
    let sent = [
        ("https://example.com/books/1", true, true),
        ("https://example.com/books/1/reviews", false, true),
        ("urn:one", true, false),
        ("urn:two", false, false),
        ("https://example.com/exact", true, true),
        ("https://example.com/exactly", false, true),
    ];
    let mut ids = Vec::new();
    for (topic, _, _) in &sent {
        ids.push(published(addr, CONFORMANCE_JWT, &[("topic", topic), ("data", topic)]).await);
    }
    // An update with several topics is picked by any of them, once.
    let alternates = published(
        addr,
        CONFORMANCE_JWT,
        &[("topic", "urn:two"), ("topic", "urn:one"), ("data", "both")],
    )
    .await;
    for (index, (topic, to_several, to_template)) in sent.iter().enumerate() {
        if *to_several {
            assert_eq!(next_update(&mut several).await.0, ids[index], "{topic}");
        }
        if *to_template {
            assert_eq!(
                next_update(&mut template_only).await.0,
                ids[index],
                "{topic}"
            );
        }
    }
    assert_eq!(next_update(&mut several).await.0, alternates);
    assert!(
        matches!(
            several.try_next_event(QUIET).await,
            herald_tests::SseNext::Timeout
        ),
        "nothing else, and the update with two matching topics once"
    );
}

#[tokio::test]
async fn every_refusal_has_its_status_and_harms_no_other_subscriber() {
    let site = Site::new("books")
        .limit("max_message_bytes", 64)
        .limit("max_subscriptions", 2);
    // The limits table follows the site's own keys, so the key goes before it.
    let toml = sites_toml("", &[&site]).replacen(
        "\n[sites.limits]",
        &format!("mercure_keys = [\"{KEY}\"]\n\n[sites.limits]"),
        1,
    );
    let herald = Herald::builder().config_toml(toml).start();
    let addr = herald.addr;
    let mut bystander = subscribe(addr, "/.well-known/mercure?topic=*", None).await;
    let writer = publisher(KEY, &["https://example.com/books/{id}"]);
    let book = ("topic", "https://example.com/books/1");

    // Subscribing.
    let get = |path: &str, jwt: Option<&str>| {
        let mut request = Request::get(addr, path);
        if let Some(jwt) = jwt {
            request = request.bearer(jwt);
        }
        request.send()
    };
    for path in [
        "/.well-known/mercure",
        "/.well-known/mercure?lastEventID=x",
        "/.well-known/mercure?match=a&match_type=exact",
        "/.well-known/mercure?match_urlpattern=https://example.com/*",
        "/.well-known/mercure?topic=",
    ] {
        get(path, None).await.assert_error(400, "bad_request");
    }
    get("/.well-known/mercure?topic=a&topic=b&topic=c", None)
        .await
        .assert_error(400, "too_many_channels");
    let foreign = mint(
        "some-other-key-0123456",
        json!({"mercure": {"subscribe": ["*"]}}),
    );
    let expired = mint(
        KEY,
        json!({"mercure": {"subscribe": ["*"], "publish": ["*"]}, "exp": unix_now() - 10}),
    );
    for (jwt, code) in [
        (foreign.as_str(), "token_invalid"),
        (expired.as_str(), "token_expired"),
        ("not-a-jwt", "token_invalid"),
    ] {
        let response = get("/.well-known/mercure?topic=*", Some(jwt)).await;
        response.assert_error(401, code);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
    }
    let cookie = Request::get(addr, "/.well-known/mercure?topic=*")
        .header("Cookie", &format!("mercureAuthorization={foreign}"))
        .send()
        .await;
    cookie.assert_error(401, "token_invalid");

    // Publishing.
    let response = publish(addr, None, &[book, ("data", "x")]).await;
    response.assert_error(401, "unauthorized");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    let foreign_writer = publisher("some-other-key-0123456", &["*"]);
    publish(addr, Some(&foreign_writer), &[book, ("data", "x")])
        .await
        .assert_error(401, "token_invalid");
    publish(addr, Some(&expired), &[book, ("data", "x")])
        .await
        .assert_error(401, "token_expired");
    for pairs in [
        vec![("topic", "https://example.com/authors/1"), ("data", "x")],
        vec![
            book,
            ("topic", "https://example.com/authors/1"),
            ("data", "x"),
        ],
    ] {
        let response = publish(addr, Some(&writer), &pairs).await;
        response.assert_error(403, "forbidden");
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer error=\"insufficient_scope\"")
        );
    }
    for pairs in [
        vec![("data", "no topic")],
        vec![book, ("id", "#fragment")],
        vec![book, ("id", "earliest")],
        vec![book, ("type", "mercure")],
        vec![book, ("retry", "soon")],
        vec![book, ("id", "two\nlines")],
    ] {
        publish(addr, Some(&writer), &pairs)
            .await
            .assert_error(400, "bad_request");
    }
    let big = "x".repeat(65);
    publish(addr, Some(&writer), &[book, ("data", &big)])
        .await
        .assert_error(413, "payload_too_large");
    Request::post(addr, "/.well-known/mercure")
        .bearer(&writer)
        .json_body(r#"{"topic":"https://example.com/books/1"}"#)
        .send()
        .await
        .assert_error(415, "unsupported_media_type");

    // Nothing refused was published, and the bystander carries on.
    let good = published(addr, &writer, &[book, ("data", &"x".repeat(64))]).await;
    assert_eq!(next_update(&mut bystander).await.0, good);
}

#[tokio::test]
async fn a_private_site_takes_a_jwt_as_its_token_and_preflights_answer() {
    let site = Site::new("closed").private();
    let herald = Herald::builder().config_toml(site_toml(&site)).start();
    let addr = herald.addr;
    Request::get(addr, "/.well-known/mercure?topic=*")
        .send()
        .await
        .assert_error(401, "token_required");
    // Any valid JWT of the site admits the subscriber; its claim still decides what is private.
    let jwt = mint(KEY, json!({"mercure": {}}));
    let mut member = subscribe(
        addr,
        &format!("/.well-known/mercure?topic=*&authorization={jwt}"),
        None,
    )
    .await;
    let writer = publisher(KEY, &["*"]);
    let private = published(addr, &writer, &[("topic", "a"), ("private", "on")]).await;
    let public = published(addr, &writer, &[("topic", "a"), ("data", "hello")]).await;
    assert_ne!(private, public);
    assert_eq!(
        next_update(&mut member).await,
        (public, "message".into(), "hello".into())
    );

    let preflight = Request::new("OPTIONS", addr, "/.well-known/mercure")
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("Authorization"))
    );
}

/// A fresh connection's stream is served off hyper (as native `/sse`); one asked for on a
/// keep-alive connection that served another request first (curl given two URLs reuses its
/// connection just so) is hyper's, with the same answer: headers, resume and live updates.
#[tokio::test]
async fn streams_on_fresh_and_reused_connections_answer_the_same() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let herald = Herald::start();
    let addr = herald.addr;
    let first = published(addr, CONFORMANCE_JWT, &[("topic", "a"), ("data", "one")]).await;
    let second = published(addr, CONFORMANCE_JWT, &[("topic", "a"), ("data", "two")]).await;
    let mut fresh = subscribe(addr, "/.well-known/mercure?topic=a", Some(&first)).await;
    assert_eq!(fresh.header("last-event-id"), Some(first.as_str()));
    assert_eq!(next_update(&mut fresh).await.0, second);

    let mut curl = tokio::process::Command::new("curl")
        .args(["-sN", "-i", "--max-time", "20", "-H"])
        .arg(format!("Last-Event-ID: {first}"))
        .arg(herald.url("/healthz"))
        .arg(herald.url("/.well-known/mercure?topic=a"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed by scripts/install-test-deps.sh");
    let mut lines = BufReader::new(curl.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let mut published_live = None;
    loop {
        let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("curl ended early");
        let line = line.trim_end().to_owned();
        if line.to_ascii_lowercase() == format!("last-event-id: {first}")
            && published_live.is_none()
        {
            published_live =
                Some(published(addr, CONFORMANCE_JWT, &[("topic", "a"), ("data", "three")]).await);
        }
        if let Some(id) = line.strip_prefix("id: ") {
            seen.push(id.to_owned());
            if seen.len() == 2 {
                break;
            }
        }
    }
    let live = published_live.expect("the stream's head named where it starts");
    assert_eq!(seen, [second, live], "the replay, then live");
    let metrics = herald.metrics().await;
    let via_hyper = herald_tests::metric_value(
        &metrics,
        "herald_http_requests_total",
        &[("route", "mercure"), ("status", "200")],
    );
    assert_eq!(
        via_hyper, 1.0,
        "only the reused connection's stream was hyper's"
    );
}

/// On shutdown a Mercure stream is told when to come back (`retry:`, at least a second) and
/// ends, so that EventSource reconnects by itself with its `Last-Event-ID`.
#[tokio::test]
async fn shutdown_tells_subscribers_when_to_come_back() {
    let mut herald = Herald::start();
    let mut stream = subscribe(herald.addr, "/.well-known/mercure?topic=*", None).await;
    herald.sigterm();
    assert_eq!(
        stream.try_next_event(EVENT_TIMEOUT).await,
        herald_tests::SseNext::Ended
    );
    assert!(
        stream.retry_ms.is_some_and(|retry| retry >= 1000),
        "retry: {:?}",
        stream.retry_ms
    );
    assert!(herald.wait_exit(EVENT_TIMEOUT).is_some_and(|s| s.success()));
}

/// On the Redis engine an update published on one node reaches a subscriber on another, and a
/// subscriber that comes back to a third point resumes there from its `Last-Event-ID`: the
/// Mercure channel is a channel like any other to the engine.
#[tokio::test]
async fn on_redis_updates_cross_nodes_and_resume_on_another() {
    let redis = Redis::start();
    let a = crate::redis::node(&redis.url()).start();
    let b = crate::redis::node(&redis.url()).start();
    let mut on_b = subscribe(b.addr, "/.well-known/mercure?topic=*", None).await;
    let first = published(a.addr, CONFORMANCE_JWT, &[("topic", "x"), ("data", "1")]).await;
    assert_eq!(
        next_update(&mut on_b).await,
        (first.clone(), "message".into(), "1".into())
    );
    let second = published(a.addr, CONFORMANCE_JWT, &[("topic", "x"), ("data", "2")]).await;
    let third = published(b.addr, CONFORMANCE_JWT, &[("topic", "x"), ("data", "3")]).await;
    let mut resumed = subscribe(a.addr, "/.well-known/mercure?topic=*", Some(&first)).await;
    assert_eq!(resumed.header("last-event-id"), Some(first.as_str()));
    assert_eq!(next_update(&mut resumed).await.0, second);
    assert_eq!(next_update(&mut resumed).await.0, third);
    assert_eq!(next_update(&mut on_b).await.0, second);
    assert_eq!(next_update(&mut on_b).await.0, third);
}
