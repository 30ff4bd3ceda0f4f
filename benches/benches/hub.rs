//! Criterion: the publish path inside one process — a registry lookup in a
//! hub holding many channels, then handing one message to each of the
//! channel's N subscribers (what `Subscriber::deliver` costs when it only
//! enqueues, as Herald's outboxes do).

use std::{collections::VecDeque, hint::black_box, sync::Arc};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::{
    ChannelKey, ChannelName, Epoch, Handoff, Hub, Message, Metrics, Position, Registration,
    Subscriber, Watch,
};
use parking_lot::Mutex;

/// A subscriber like a session's outbox: lock, push, unlock. It keeps at
/// most 64 messages so that a long benchmark does not grow without bound.
#[derive(Default)]
struct Outbox(Mutex<VecDeque<Arc<Message>>>);

impl Subscriber for Outbox {
    fn deliver(&self, _slot: u32, message: &Arc<Message>) -> Handoff {
        let mut queue = self.0.lock();
        if queue.len() >= 64 {
            queue.clear();
        }
        queue.push_back(message.clone());
        Handoff::Queued
    }
}

/// Channels besides the measured one, so the lookup searches a populated registry.
const OTHER_CHANNELS: usize = 10_000;

fn channel(name: &str) -> ChannelKey {
    // Unwrap: the names used here follow the channel naming rules.
    ChannelKey::new("bench", &ChannelName::new(name).unwrap())
}

fn message(size: usize) -> Arc<Message> {
    let position = Position {
        epoch: Epoch::from_u64(7),
        offset: 1,
    };
    let data = Bytes::from(format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(size.saturating_sub(10))
    ));
    Arc::new(Message::new(channel("bench"), position, data))
}

/// A hub with `subscribers` on `bench` and one subscriber on each other channel.
fn hub(subscribers: usize) -> (Hub, Vec<Registration>) {
    let hub = Hub::new(Metrics::default());
    let mut held = Vec::new();
    for i in 0..OTHER_CHANNELS {
        let sink: Arc<dyn Subscriber> = Arc::new(Outbox::default());
        held.push(hub.subscribe(channel(&format!("user:{i}")), sink, 0, Watch::Yes));
    }
    for i in 0..subscribers {
        let sink: Arc<dyn Subscriber> = Arc::new(Outbox::default());
        held.push(hub.subscribe(channel("bench"), sink, i as u32, Watch::Yes));
    }
    (hub, held)
}

fn deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_deliver");
    for subscribers in [1, 100, 10_000] {
        let (hub, _held) = hub(subscribers);
        let message = message(100);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| b.iter(|| black_box(hub.deliver(black_box(&message)))),
        );
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let (hub, _held) = hub(1);
    c.bench_function("hub_lookup", |b| {
        b.iter(|| black_box(hub.subscriber_count(black_box("user:4242"))))
    });
}

criterion_group!(benches, lookup, deliver);
criterion_main!(benches);
