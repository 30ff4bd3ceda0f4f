//! Herald's browser assets (the demo page, the `herald.js` client, `meteor.js` for pages
//! written for Meteor: docs/compat.md, and the operator console: docs/console.md), embedded into
//! the binary.
//!
//! The files live under `web/assets/` and are compiled in with `include_bytes!`, so the `herald`
//! binary serves them with no files on disk. They are plain HTML, CSS and JavaScript modules:
//! no build step, no framework.

/// One embedded file, ready to be sent as an HTTP response body.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The `Content-Type` header value, charset included for text.
    pub content_type: &'static str,
    /// The file's bytes, exactly as in `web/assets/`.
    pub body: &'static [u8],
}

/// Returns the asset served at the URL `path` (without query string), e.g. `/` or `/herald.js`.
pub fn asset(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(served_at, _)| *served_at == path)
        .map(|(_, asset)| *asset)
}

/// The operator console's page (HTML), served at `/console` only to whom the admin routes answer
/// (the server checks; docs/console.md). It is not in the public table that [`asset`] reads, so
/// that no other path serves it. The page holds no data; its script and styles (`/console.js`,
/// `/console.css`) are public assets.
pub const CONSOLE_HTML: &[u8] = include_bytes!("../assets/console.html");

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every embedded file and the URL path it is served at.
const ASSETS: &[(&str, Asset)] = &[
    (
        "/",
        Asset {
            content_type: HTML,
            body: include_bytes!("../assets/index.html"),
        },
    ),
    (
        "/demo.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../assets/demo.css"),
        },
    ),
    (
        "/demo.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/demo.js"),
        },
    ),
    (
        "/meteor.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/meteor.js"),
        },
    ),
    (
        "/herald.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/herald.js"),
        },
    ),
    (
        "/console.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../assets/console.css"),
        },
    ),
    (
        "/console.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/console.js"),
        },
    ),
    // herald.js as a classic script (`window.Herald`), made by web/build.mjs.
    (
        "/herald.classic.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/herald.classic.js"),
        },
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        let asset = asset(path).unwrap_or_else(|| panic!("{path} is not served"));
        std::str::from_utf8(asset.body).expect("assets are UTF-8 text")
    }

    #[test]
    fn every_listed_asset_resolves() {
        for (path, content_type) in [
            ("/", HTML),
            ("/demo.css", CSS),
            ("/demo.js", JS),
            ("/herald.js", JS),
            ("/herald.classic.js", JS),
            ("/meteor.js", JS),
            ("/console.css", CSS),
            ("/console.js", JS),
        ] {
            let found = asset(path).unwrap_or_else(|| panic!("{path} is not served"));
            assert_eq!(found.content_type, content_type, "{path}");
            assert!(!found.body.is_empty(), "{path} is empty");
        }
    }

    #[test]
    fn unknown_paths_do_not_resolve() {
        for path in [
            "",
            "/nope",
            "/index",
            "/demo.js/",
            "/DEMO.JS",
            "demo.js",
            "/../demo.js",
            // The console's page is served by the router after the admin checks, never as a
            // public asset.
            "/console",
            "/console.html",
        ] {
            assert!(asset(path).is_none(), "{path} should not be served");
        }
    }

    #[test]
    fn the_page_links_only_served_assets() {
        let page = text("/");
        for link in ["\"/demo.css\"", "\"/demo.js\""] {
            assert!(page.contains(link), "index.html does not link {link}");
        }
        assert!(text("/demo.js").contains("from \"/herald.js\""));
    }

    #[test]
    fn the_page_keeps_the_test_hooks() {
        let page = text("/");
        for id in [
            "user-id",
            "notice-text",
            "post-button",
            "public-status",
            "user-status",
            "public-timeline",
            "user-timeline",
        ] {
            assert!(page.contains(&format!("id=\"{id}\"")), "#{id} is missing");
        }
    }

    #[test]
    fn the_console_links_only_served_assets_and_nothing_remote() {
        let page = std::str::from_utf8(CONSOLE_HTML).expect("the console page is UTF-8");
        for link in ["\"/console.css\"", "\"/console.js\""] {
            assert!(page.contains(link), "console.html does not link {link}");
        }
        // No CDN, no web fonts: the console works on a machine with no way out.
        for text in [page, text("/console.js"), text("/console.css")] {
            for remote in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(remote), "the console refers to {remote}");
            }
        }
    }

    #[test]
    fn the_console_keeps_the_test_hooks() {
        let page = std::str::from_utf8(CONSOLE_HTML).expect("the console page is UTF-8");
        for id in [
            "signin-form",
            "secret-input",
            "chart-connections",
            "chart-messages",
            "chart-deliveries",
            "chart-lag",
            "chart-slow",
            "chart-redis",
            "redis-light",
            "sites-table",
            "channels-table",
            "top-users",
            "publish-form",
            "channel-form",
            "disconnect-form",
        ] {
            assert!(page.contains(&format!("id=\"{id}\"")), "#{id} is missing");
        }
    }

    #[test]
    fn scripts_never_insert_html() {
        // Notices are user content: scripts must insert them as text.
        for path in ["/demo.js", "/herald.js", "/console.js"] {
            let script = text(path);
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!script.contains(sink), "{path} uses {sink}");
            }
        }
    }
}
