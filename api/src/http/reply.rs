//! Building answers: JSON bodies, and refusals in the error shape of
//! `docs/protocol.md` with the status the code's row gives it.

use bytes::Bytes;
use hyper::{Response, StatusCode, header};
use push::{ErrorCode, Refusal};

use super::{Body, full};

/// A refusal: the HTTP status of its code (`push::ErrorCode::TABLE`) and
/// `{"error":{"code":…,"message":…}}`.
pub(crate) fn refusal(refusal: &Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, refusal.http_body())
}

/// A refusal made on the spot.
pub(crate) fn refuse(code: ErrorCode, message: &str) -> Response<Body> {
    refusal(&Refusal::new(code, message.to_string()))
}

pub(crate) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// 405 with the `Allow` header naming the one method the route takes.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = refuse(
        ErrorCode::MethodNotAllowed,
        &format!("this route takes {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// The answer to a CORS preflight: `204` allowing `methods` and request
/// `headers` for 600 s. The caller adds the origin where it checks one.
pub(crate) fn preflight(methods: &'static str, headers: &'static str) -> Response<Body> {
    let mut response = empty(StatusCode::NO_CONTENT);
    let answer = response.headers_mut();
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::HeaderValue::from_static(methods),
    );
    answer.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::HeaderValue::from_static(headers),
    );
    answer.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        header::HeaderValue::from_static("600"),
    );
    response
}
