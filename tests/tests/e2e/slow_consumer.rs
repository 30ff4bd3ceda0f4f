//! Slow consumers: a client that stops reading is cut off (`error` frame and 4100 / `event: error`) without slowing anyone else, and recovers on reconnect.

use std::time::Duration;

use herald_tests::{
    Herald, Position, SSE_TIMEOUT, SseClient, SseNext, WS_TIMEOUT, WsClient, WsEvent, WsOptions,
    metric_value,
};
use tokio::sync::mpsc;

/// The outbox limit these tests run with.
const OUTBOX_MAX_BYTES: usize = 65536;

/// The size of each published payload.
const PAYLOAD_BYTES: usize = 8 * 1024;

/// `SO_RCVBUF` of the stalled client, so that its kernel buffer fills after a few messages.
const STALLED_RCVBUF: u32 = 4096;

/// A Herald whose outbox limit is small and whose closing connections wait long enough for the
/// stalled client to read its close frame once it starts reading again.
fn herald() -> Herald {
    Herald::builder()
        .env(
            "HERALD_CONNECTION_OUTBOX_MAX_BYTES",
            OUTBOX_MAX_BYTES.to_string(),
        )
        .env("HERALD_CONNECTION_CLOSE_TIMEOUT_SECS", "120")
        .env("HERALD_HISTORY_SIZE", "100000")
        .start()
}

fn payload(n: u64) -> String {
    format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(PAYLOAD_BYTES))
}

/// The most bytes that can sit in kernel buffers between Herald and a client that does not read:
/// the server's send buffer can grow to the larger of `tcp_wmem`'s maximum and twice
/// `wmem_max` (an explicit `SO_SNDBUF` is doubled by the kernel), plus what the client's receive
/// buffer holds. Publishing this much more than the outbox limit must overflow the outbox.
fn kernel_buffer_bound() -> usize {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let tcp_wmem_max = read("/proc/sys/net/ipv4/tcp_wmem")
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    let wmem_max = read("/proc/sys/net/core/wmem_max")
        .trim()
        .parse::<usize>()
        .unwrap_or(4 << 20);
    tcp_wmem_max.max(2 * wmem_max) + 4 * STALLED_RCVBUF as usize
}

/// Reads messages on a normal client in the background and reports their offsets.
fn spawn_reader(mut client: WsClient) -> mpsc::UnboundedReceiver<(u64, usize)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let WsEvent::Text(text) = client.next_event(Duration::from_secs(60)).await {
            let message = herald_tests::Delivered::parse(&text);
            if tx
                .send((message.position.offset, message.data.len()))
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Publishes payloads until the slow-consumer counter of `transport` moves or so much was
/// published that the stalled client's outbox must have overflowed. Returns the last position.
///
/// Each message is published only once the `normal` client has it, in order and whole: a
/// client that keeps up is never cut off, and pacing on it keeps the test about the stalled
/// client even when a loaded machine schedules the normal reader late (it shares the outbox
/// limit, and a burst published faster than it is scheduled would overflow it too).
async fn publish_until_overflow(
    herald: &Herald,
    transport: &str,
    normal: &mut mpsc::UnboundedReceiver<(u64, usize)>,
) -> Position {
    let labels = [("reason", "slow_consumer"), ("transport", transport)];
    let bound = kernel_buffer_bound() + 4 * OUTBOX_MAX_BYTES;
    let mut published = 0;
    let mut last = herald.publish("public", &payload(1)).await;
    loop {
        let (offset, len) = tokio::time::timeout(WS_TIMEOUT, normal.recv())
            .await
            .unwrap_or_else(|_| panic!("normal client: offset {} did not arrive", last.offset))
            .expect("normal client still connected");
        assert_eq!(
            offset, last.offset,
            "the normal client gets every message in order"
        );
        assert_eq!(len, payload(offset).len());
        let overflowed = last.offset % 16 == 0
            && metric_value(&herald.metrics().await, "herald_disconnects_total", &labels) > 0.0;
        if overflowed || published >= bound {
            return last;
        }
        last = herald.publish("public", &payload(last.offset + 1)).await;
        published += PAYLOAD_BYTES;
    }
}

/// Waits until the slow-consumer counter of `transport` is at least 1.
async fn wait_for_slow_consumer_metric(herald: &Herald, transport: &str) {
    let labels = [("reason", "slow_consumer"), ("transport", transport)];
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        poll.tick().await;
        let metrics = herald.metrics().await;
        if metric_value(&metrics, "herald_disconnects_total", &labels) >= 1.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "herald_disconnects_total{{reason=\"slow_consumer\",transport=\"{transport}\"}} never moved:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_client_that_stops_reading_is_closed_4100_and_others_get_everything() {
    let herald = herald();
    let options = WsOptions {
        recv_buffer_bytes: Some(STALLED_RCVBUF),
    };
    let mut stalled = WsClient::connect_with(&herald.ws_url("/ws"), options).await;
    stalled.subscribe("public").await;
    let mut normal = WsClient::connect(&herald.ws_url("/ws")).await;
    normal.subscribe("public").await;
    let mut normal_offsets = spawn_reader(normal);

    // From here on nothing reads `stalled` until the publishing is done.
    let Position {
        epoch,
        offset: last,
    } = publish_until_overflow(&herald, "ws", &mut normal_offsets).await;

    let (mut frames, code, reason) = stalled.read_until_close(WS_TIMEOUT).await;
    assert_eq!(code, 4100, "slow consumer close code (reason {reason:?})");
    assert_eq!(reason, "slow_consumer");
    // The outbox is over its limit, yet the `error` frame that every 40xx/41xx close comes
    // behind still goes out, right before the close.
    let error: serde_json::Value =
        serde_json::from_str(&frames.pop().expect("an error frame before the close"))
            .expect("JSON");
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("slow_consumer")),
        "the last frame before the close"
    );
    let offsets: Vec<u64> = frames
        .iter()
        .map(|f| herald_tests::Delivered::parse(f).position.offset)
        .collect();
    let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "what the stalled client got is a gap-free prefix"
    );
    assert!(
        offsets.len() < last as usize,
        "the stalled client was cut off before the end"
    );
    wait_for_slow_consumer_metric(&herald, "ws").await;

    // It comes back with `since` and recovers what it missed.
    let seen = offsets.last().copied().unwrap_or(0);
    let mut back = WsClient::connect(&herald.ws_url("/ws")).await;
    let subscribed = back.subscribe_since("public", &epoch, seen).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for offset in seen + 1..=last {
        assert_eq!(back.next_message(WS_TIMEOUT).await.position.offset, offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_that_stops_reading_gets_error_and_resumes_with_last_event_id() {
    let herald = herald();
    let mut stalled = SseClient::connect_with(
        herald.addr,
        "/sse?channel=public",
        None,
        Some(STALLED_RCVBUF),
    )
    .await;
    stalled.assert_stream();
    stalled.expect_subscribed("public").await;
    let mut normal = WsClient::connect(&herald.ws_url("/ws")).await;
    normal.subscribe("public").await;
    let mut normal_offsets = spawn_reader(normal);

    let last = publish_until_overflow(&herald, "sse", &mut normal_offsets)
        .await
        .offset;

    let mut offsets = Vec::new();
    let mut error = None;
    loop {
        match stalled.try_next_event(SSE_TIMEOUT).await {
            SseNext::Event(event) if event.event == "message" => {
                assert!(error.is_none(), "no message after the error event");
                offsets.push(herald_tests::Delivered::parse(&event.data).position.offset);
            }
            SseNext::Event(event) if event.event == "error" => error = Some(event.json()),
            SseNext::Event(event) => panic!("unexpected event {event:?}"),
            SseNext::Ended => break,
            SseNext::Timeout => panic!("the stalled stream was not closed"),
        }
    }
    let error = error.expect("an `event: error` before the stream ends");
    assert_eq!(error["code"], "slow_consumer", "{error}");
    let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "what the stalled stream got is a gap-free prefix"
    );
    assert!(
        offsets.len() < last as usize,
        "the stalled stream was cut off before the end"
    );
    wait_for_slow_consumer_metric(&herald, "sse").await;

    // The browser would reconnect with the last event ID it saw: it must name the last message
    // it actually received, and resuming from it must fill the gap exactly.
    let last_event_id = stalled.last_event_id().to_owned();
    let seen = offsets.last().copied().unwrap_or(0);
    assert!(
        last_event_id.ends_with(&format!(":{seen}")),
        "Last-Event-ID {last_event_id:?} must name the last message received ({seen})"
    );
    let mut back =
        SseClient::connect(herald.addr, "/sse?channel=public", Some(&last_event_id)).await;
    back.assert_stream();
    let (_, subscribed) = back.expect_subscribed("public").await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    for offset in seen + 1..=last {
        assert_eq!(back.next_message(SSE_TIMEOUT).await.position.offset, offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_slow_consumer_on_many_channels_resumes_every_channel_without_gap() {
    // With 100 channels the cursor in each event's `id:` line is longer than the message itself,
    // so the write that fills the socket very likely ends inside or right after an `id:` line.
    // Whatever happens there, the last event ID the client ends up with must name only messages
    // it received, or resuming from it would skip one.
    const CHANNELS: usize = 100;
    let herald = herald();
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let query: Vec<String> = names.iter().map(|c| format!("channel={c}")).collect();
    let path = format!("/sse?{}", query.join("&"));
    let mut stalled = SseClient::connect_with(herald.addr, &path, None, Some(STALLED_RCVBUF)).await;
    stalled.assert_stream();
    for channel in &names {
        stalled.expect_subscribed(channel).await;
    }

    // Each batch puts about CHANNELS × (cursor + event) bytes on the stalled stream.
    let per_batch = CHANNELS * (CHANNELS * 24 + 200);
    let bound = kernel_buffer_bound() + 4 * OUTBOX_MAX_BYTES;
    let labels = [("reason", "slow_consumer"), ("transport", "sse")];
    let mut last = 0;
    let mut written = 0;
    while written < bound {
        last = herald
            .publish_batch(&names, &format!(r#"{{"n":{}}}"#, last + 1))
            .await[0]
            .offset;
        written += per_batch;
        if metric_value(&herald.metrics().await, "herald_disconnects_total", &labels) > 0.0 {
            break;
        }
    }

    let mut received = vec![0u64; CHANNELS];
    let mut error = None;
    loop {
        match stalled.try_next_event(SSE_TIMEOUT).await {
            SseNext::Event(event) if event.event == "message" => {
                let message = herald_tests::Delivered::parse(&event.data);
                let index: usize = message.channel[1..].parse().expect("cN");
                assert_eq!(
                    message.position.offset,
                    received[index] + 1,
                    "in order on {}",
                    message.channel
                );
                received[index] = message.position.offset;
            }
            SseNext::Event(event) if event.event == "error" => error = Some(event.json()),
            SseNext::Event(event) => panic!("unexpected event {event:?}"),
            SseNext::Ended => break,
            SseNext::Timeout => panic!("the stalled stream was not closed"),
        }
    }
    assert_eq!(error.expect("an `event: error`")["code"], "slow_consumer");
    assert!(
        received.iter().any(|&r| r < last),
        "the stream was cut off before the end"
    );

    let last_event_id = stalled.last_event_id().to_owned();
    let claimed: Vec<u64> = last_event_id
        .split(',')
        .map(|p| {
            p.rsplit_once(':')
                .expect("epoch:offset")
                .1
                .parse()
                .expect("offset")
        })
        .collect();
    assert_eq!(
        claimed, received,
        "Last-Event-ID {last_event_id:?} must name exactly what was received"
    );

    let mut back = SseClient::connect(herald.addr, &path, Some(&last_event_id)).await;
    back.assert_stream();
    for channel in &names {
        let (_, subscribed) = back.expect_subscribed(channel).await;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
    }
    let missing: u64 = received.iter().map(|r| last - r).sum();
    for _ in 0..missing {
        let message = back.next_message(SSE_TIMEOUT).await;
        let index: usize = message.channel[1..].parse().expect("cN");
        assert_eq!(
            message.position.offset,
            received[index] + 1,
            "no gap on {}",
            message.channel
        );
        received[index] = message.position.offset;
    }
    assert!(
        received.iter().all(|&r| r == last),
        "every channel caught up: {received:?}"
    );
}
