//! The console's stylesheet and script, embedded in the binary and served
//! under names that carry a hash of their content, so a browser may keep
//! them forever and a new build's pages ask for the new ones.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest as _, Sha256};

struct Asset {
    /// `console.<hash>.css`
    name: String,
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    fn new(stem: &str, extension: &str, content_type: &'static str, body: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let hash: String = digest[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self {
            name: format!("{stem}.{hash}.{extension}"),
            content_type,
            body,
        }
    }
}

static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/console.js"),
    )
});

/// The stylesheet's path.
pub(super) fn style() -> String {
    format!("/console/assets/{}", STYLE.name)
}

/// The script's path.
pub(super) fn script() -> String {
    format!("/console/assets/{}", SCRIPT.name)
}

pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = [&*STYLE, &*SCRIPT]
        .into_iter()
        .find(|asset| asset.name == name)
    else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        assert!(style().starts_with("/console/assets/console."));
        assert!(style().ends_with(".css"));
        assert!(script().ends_with(".js"));
        assert_eq!(STYLE.name.len(), "console.".len() + 12 + ".css".len());
    }
}
