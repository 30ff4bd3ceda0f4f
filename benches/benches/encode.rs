//! Criterion: encoding one message per wire format (the WebSocket `message`
//! frame, the shared part of an SSE event), which Herald does once per
//! message and format, whatever the number of subscribers.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::{ChannelKey, ChannelName, Epoch, Message, Position};

fn message(size: usize) -> Message {
    let position = Position {
        epoch: Epoch::from_u64(0x5f0c_2a9e_1b7d_4c33),
        offset: 42,
    };
    let data = Bytes::from(format!(
        "{{\"t\":1700000000000000,\"seq\":42,\"pad\":\"{}\"}}",
        "x".repeat(size.saturating_sub(44))
    ));
    // Unwrap: "public" follows the channel naming rules.
    let channel = ChannelKey::new("bench", &ChannelName::new("public").unwrap());
    Message::new(channel, position, data)
}

fn encode(c: &mut Criterion) {
    type Encoder = fn(&Message) -> Bytes;
    let formats: [(&str, Encoder); 2] = [
        ("ws_message", push::bench::ws_message),
        ("sse_message", push::bench::sse_message),
    ];
    for (name, encoder) in formats {
        let mut group = c.benchmark_group(name);
        for size in [100, 1024, 16 * 1024] {
            group.throughput(Throughput::Bytes(size as u64));
            // A fresh message per iteration: encodings are cached in the message.
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
                b.iter_batched(
                    || message(size),
                    |m| black_box(encoder(&m)),
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
