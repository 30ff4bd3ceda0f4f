//! `GET /api/admin/traffic`: the traffic accounting's report
//! (docs/operations.md, "Accounting").

use hyper::{Request, Response, body::Incoming};
use push::{ErrorCode, Refusal};

use super::{Body, ok, reply};
use crate::App;

/// Users listed per measure when the query does not say (`?top=N`).
const DEFAULT_TOP: usize = 20;

pub(super) fn report(app: &App, request: &Request<Incoming>) -> Response<Body> {
    let top = match top(request.uri().query()) {
        Ok(top) => top.min(app.config().accounting.top_users),
        Err(refusal) => return reply::refusal(&refusal),
    };
    ok(app.accounting().report(top))
}

/// `?top=N`: how many users to list per measure.
fn top(query: Option<&str>) -> Result<usize, Refusal> {
    let Some(query) = query else {
        return Ok(DEFAULT_TOP);
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "top" {
            return value
                .parse()
                .map_err(|_| Refusal::new(ErrorCode::BadRequest, "top must be a whole number"));
        }
    }
    Ok(DEFAULT_TOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_top_from_the_query() {
        assert_eq!(top(None).ok(), Some(DEFAULT_TOP));
        assert_eq!(top(Some("top=5")).ok(), Some(5));
        assert_eq!(top(Some("x=1&top=3")).ok(), Some(3));
        assert!(top(Some("top=many")).is_err());
    }
}
