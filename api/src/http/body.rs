//! Reading a publisher's request body within its limits: its size, a
//! deadline for the whole body, and a process-wide budget of body bytes in
//! flight. Bodies are read only once the credential is checked
//! (`credentials.rs`), so only a site's own web application can spend the
//! budget, and a slow or stalled one cannot hold it past the deadline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use push::{ErrorCode, Refusal};

/// The bytes every request body being read, or being handled, may hold
/// together (`publish.max_body_bytes_in_flight`).
#[derive(Debug)]
pub(crate) struct BodyBudget {
    in_flight: AtomicUsize,
    cap: usize,
}

/// A part of the budget, held while its body is read and handled, and
/// given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

/// What a body read answered.
pub(crate) struct ReadBody {
    pub bytes: Bytes,
    /// The body's share of the budget: kept as long as the bytes are.
    pub reservation: Reservation,
}

/// The length a request's `Content-Length` declares, when it declares one.
pub(crate) fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The limits a body is read within.
pub(crate) struct BodyLimits {
    /// The largest body, in bytes.
    pub max_bytes: usize,
    /// How long the whole body may take to arrive.
    pub deadline: Duration,
}

impl BodyBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            cap,
        })
    }

    /// Bytes held by bodies right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes `bytes` of the budget, or nothing when they are not there.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: self.clone(),
            bytes: 0,
        };
        reservation.grow_to(bytes).then_some(reservation)
    }
}

impl Reservation {
    /// Grows the reservation to `bytes`; false when the budget has not got them.
    fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&more| more > 0) else {
            return true;
        };
        let cap = self.budget.cap;
        let taken =
            self.budget
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    held.checked_add(more).filter(|&total| total <= cap)
                });
        if taken.is_ok() {
            self.bytes = bytes;
        }
        taken.is_ok()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Reads `body`, which says it is `declared` bytes long (if it says).
/// A declared length is taken from the budget before anything is read, so
/// that a body that cannot fit is refused at once; a body without one takes
/// its bytes as they come.
pub(crate) async fn read(
    body: Incoming,
    declared: Option<u64>,
    limits: BodyLimits,
    budget: &Arc<BodyBudget>,
) -> Result<ReadBody, Refusal> {
    let max = limits.max_bytes;
    let too_large = || {
        Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body may be at most {max} bytes"),
        )
    };
    let overloaded = || {
        Refusal::new(
            ErrorCode::Overloaded,
            "request bodies in flight hold all the memory set aside for them \
             (publish.max_body_bytes_in_flight); retry shortly",
        )
    };
    let declared = match declared {
        Some(length) if length > max as u64 => return Err(too_large()),
        Some(length) => length as usize,
        None => 0,
    };
    let mut reservation = budget.reserve(declared).ok_or_else(overloaded)?;
    let collect = async {
        let mut bytes = BytesMut::with_capacity(declared);
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|error| Refusal::new(ErrorCode::BadRequest, error.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let length = bytes.len() + data.len();
            if length > max {
                return Err(too_large());
            }
            if !reservation.grow_to(length) {
                return Err(overloaded());
            }
            bytes.extend_from_slice(&data);
        }
        Ok(bytes.freeze())
    };
    let deadline = limits.deadline;
    let bytes = tokio::time::timeout(deadline, collect)
        .await
        .map_err(|_| {
            Refusal::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s (publish.body_timeout_secs)",
                    deadline.as_secs()
                ),
            )
        })??;
    Ok(ReadBody { bytes, reservation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_cap_and_give_back_when_dropped() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.in_flight(), 100);
        assert!(!a.grow_to(61));
        drop(b);
        assert!(a.grow_to(100));
        assert!(a.grow_to(50), "shrinking is a no-op");
        drop(a);
        assert_eq!(budget.in_flight(), 0);
    }
}
