//! The two non-redirect pages: the anti-phishing preview and the QR code.

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use crate::entry::Link;

/// An HTML page that shows where a short URL leads, without going there.
pub fn preview(short_url: &str, link: &Link) -> String {
    let target = escape(&link.target);
    let short_url = escape(short_url);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>Preview of {short_url}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}\
         code{{word-break:break-all;background:#f3f3f3;padding:.2em .4em}}</style></head>\
         <body><h1>Where this link goes</h1>\
         <p><code>{short_url}</code> redirects ({status}) to:</p>\
         <p><code>{target}</code></p>\
         <p>Check the address before you continue. \
         <a href=\"{target}\" rel=\"noopener noreferrer nofollow\">Continue to the destination</a></p>\
         </body></html>\n",
        status = link.status.as_u16(),
    )
}

/// A QR code of `short_url`, as PNG or SVG.
pub fn qr(short_url: &str, svg: bool) -> Response {
    let (body, content_type) = if svg {
        (
            tinyurl_domain::qr::svg(short_url).map(String::into_bytes),
            "image/svg+xml",
        )
    } else {
        (tinyurl_domain::qr::png(short_url), "image/png")
    };
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            // Only a short URL longer than a QR code can hold gets here.
            tracing::error!(%error, "cannot make a QR code");
            let mut response = Response::new(Body::from(format!("{error}\n")));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    // An SVG is a document: a browser must not sniff it into anything else.
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// HTML-escapes text for element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"https://x.example/?a=<b>&c="d"'"#),
            "https://x.example/?a=&lt;b&gt;&amp;c=&quot;d&quot;&#39;"
        );
    }
}
