//! Which site a Pusher REST request is signed by (`sites::pusher`): the
//! site its `auth_key` names, whose id is the path's `<app_id>`, and whose
//! secret signs it. Every failure is 401, whatever else is wrong with the
//! request, as the Pusher libraries expect.

use std::sync::Arc;

use push::{ErrorCode, Refusal};
use sites::{Site, pusher};

use crate::App;

/// The site that signed a request for `app_id`: `method`, `path` and
/// `query` as sent, with its `body` (`None` for a GET). A refusal is a 401
/// saying why.
pub(crate) fn signed_site(
    app: &App,
    app_id: &str,
    method: &str,
    path: &str,
    query: &str,
    body: Option<&[u8]>,
) -> Result<Arc<Site>, Refusal> {
    let unsigned = |why: &str| Refusal::new(ErrorCode::Unauthorized, why.to_string());
    let Some(site) = pusher::auth_key(query).and_then(|key| app.sessions().sites().by_key(&key))
    else {
        return Err(unsigned(
            "auth_key names no site: sign the request with the site's key and secret",
        ));
    };
    if app_id != site.id() {
        return Err(unsigned(
            "the app id in the path is not the id of the site auth_key names",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let settings = site.settings();
    if let Err(why) = pusher::verify(&settings.secrets, method, path, query, body, now) {
        app.sessions()
            .metrics()
            .reject(site.id(), ErrorCode::Unauthorized);
        return Err(unsigned(&why.to_string()));
    }
    Ok(site)
}
