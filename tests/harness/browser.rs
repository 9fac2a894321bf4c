//! A real browser for the console tests: Debian's Chromium, headless, driven
//! through ChromeDriver's W3C WebDriver protocol (JSON over HTTP on a free
//! loopback port). Missing either fails the test with the packages to
//! install; nothing skips.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use crate::process::{ScratchDir, free_port, wait_until};

/// WebDriver's key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Bound on one WebDriver command (a navigation waits for the page).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const CHROMIUM: &str = "/usr/bin/chromium";
/// axe-core, as `npm ci` in `tests/browser` installs it (pinned there).
const AXE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/browser/node_modules/axe-core/axe.min.js"
);
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session; the driver is killed when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: ScratchDir,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver and a headless Chromium `width` × `height` CSS
    /// pixels large.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        Self::start_with(width, height, true).await
    }

    /// [`Self::start`], with pages' scripts on or off.
    pub async fn start_with(width: u32, height: u32, scripts: bool) -> anyhow::Result<Self> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            ensure!(
                std::path::Path::new(path).exists(),
                "{path} is missing: apt-get install -y chromium chromium-driver (package {package})"
            );
        }
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Its own process group, so the browsers it starts go with it.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start chromedriver")?;
        let profile = ScratchDir::new("chromium", None)?;
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        wait_until(
            "chromedriver ready",
            Duration::from_secs(30),
            || async move {
                let status = tokio::time::timeout(
                    Duration::from_secs(2),
                    exchange(addr, "GET", "/status", Vec::new()),
                )
                .await??;
                Ok(status.0 == 200)
            },
        )
        .await?;
        let profile_dir: PathBuf = browser._profile.path().to_path_buf();
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile_dir.display()),
            format!("--window-size={width},{height}"),
        ];
        // Chromium's sandbox needs user namespaces it does not get as root.
        if nix::unistd::Uid::effective().is_root() {
            args.push("--no-sandbox".to_owned());
        }
        let created = browser
            .command(
                "POST",
                "/session",
                &json!({
                    "capabilities": {
                        "alwaysMatch": {
                            "browserName": "chrome",
                            "goog:chromeOptions": {
                                "binary": CHROMIUM,
                                "args": args,
                                "prefs": {
                                    "profile.managed_default_content_settings.javascript":
                                        if scripts { 1 } else { 2 },
                                },
                            },
                            "goog:loggingPrefs": { "browser": "ALL" },
                        }
                    }
                }),
            )
            .await?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no session id")?
            .to_owned();
        Ok(browser)
    }

    /// One WebDriver command; its `value`, or the error it reported.
    async fn command(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let body = if method == "GET" {
            Vec::new()
        } else {
            serde_json::to_vec(body)?
        };
        let (status, reply) =
            tokio::time::timeout(COMMAND_TIMEOUT, exchange(self.addr, method, path, body))
                .await
                .with_context(|| {
                    format!("{method} {path} took longer than {COMMAND_TIMEOUT:?}")
                })??;
        let reply: Value = serde_json::from_slice(&reply).with_context(|| {
            format!(
                "{method} {path}: not JSON: {}",
                String::from_utf8_lossy(&reply)
            )
        })?;
        if status != 200 {
            bail!(
                "{method} {path}: {} {}",
                reply["value"]["error"],
                reply["value"]["message"]
            );
        }
        Ok(reply["value"].clone())
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", &self.at("/url"), &json!({ "url": url }))
            .await
            .map(drop)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        let url = self.command("GET", &self.at("/url"), &json!({})).await?;
        url.as_str().map(str::to_owned).context("no URL")
    }

    pub async fn title(&self) -> anyhow::Result<String> {
        let title = self.command("GET", &self.at("/title"), &json!({})).await?;
        title.as_str().map(str::to_owned).context("no title")
    }

    /// The first element matching the CSS selector.
    pub async fn find(&self, selector: &str) -> anyhow::Result<Element> {
        let found = self
            .command(
                "POST",
                &self.at("/element"),
                &json!({ "using": "css selector", "value": selector }),
            )
            .await
            .with_context(|| format!("no element {selector}"))?;
        found[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .context("not an element reference")
    }

    /// How many elements match the CSS selector.
    pub async fn count(&self, selector: &str) -> anyhow::Result<usize> {
        let found = self
            .command(
                "POST",
                &self.at("/elements"),
                &json!({ "using": "css selector", "value": selector }),
            )
            .await?;
        Ok(found.as_array().map_or(0, Vec::len))
    }

    /// Types `text` into the element (after what it holds).
    pub async fn type_into(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        self.command(
            "POST",
            &self.at(&format!("/element/{}/value", element.0)),
            &json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    /// Empties an input.
    pub async fn clear(&self, element: &Element) -> anyhow::Result<()> {
        self.command(
            "POST",
            &self.at(&format!("/element/{}/clear", element.0)),
            &json!({}),
        )
        .await
        .map(drop)
    }

    /// Clicks the element (and waits for a navigation it starts).
    pub async fn click(&self, element: &Element) -> anyhow::Result<()> {
        self.command(
            "POST",
            &self.at(&format!("/element/{}/click", element.0)),
            &json!({}),
        )
        .await
        .map(drop)
    }

    /// Clicks the element and waits until the page it leads to has loaded
    /// (a click alone may return before a form's answer arrives).
    pub async fn click_to_next_page(&self, element: &Element) -> anyhow::Result<()> {
        self.script("window.tinyurlPageBefore = true;", &[]).await?;
        self.click(element).await?;
        wait_until("the next page", COMMAND_TIMEOUT, || async {
            let loaded = self
                .script(
                    "return window.tinyurlPageBefore === undefined \
                     && document.readyState === 'complete';",
                    &[],
                )
                .await?;
            Ok(loaded == Value::Bool(true))
        })
        .await
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> anyhow::Result<String> {
        let text = self
            .command(
                "GET",
                &self.at(&format!("/element/{}/text", element.0)),
                &json!({}),
            )
            .await?;
        text.as_str().map(str::to_owned).context("no text")
    }

    /// Presses keys on whatever has the focus (`\u{E004}` is Tab,
    /// `\u{E007}` Enter).
    pub async fn keys(&self, keys: &str) -> anyhow::Result<()> {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                [
                    json!({ "type": "keyDown", "value": key.to_string() }),
                    json!({ "type": "keyUp", "value": key.to_string() }),
                ]
            })
            .collect();
        self.command(
            "POST",
            &self.at("/actions"),
            &json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] }),
        )
        .await
        .map(drop)
    }

    /// Runs `script` in the page (a function body; `arguments` are `args`).
    pub async fn script(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.command(
            "POST",
            &self.at("/execute/sync"),
            &json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Runs `script` in the page as an asynchronous function: it ends by
    /// calling its last argument with the result.
    pub async fn script_async(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.command(
            "POST",
            &self.at("/execute/async"),
            &json!({ "script": script, "args": args }),
        )
        .await
    }

    /// The serious and critical accessibility violations axe-core finds in
    /// the page against WCAG 2.1 A and AA, as `rule (impact): help — nodes`
    /// lines. axe-core comes from `tests/browser` (`npm ci` there; the
    /// test script runs it).
    pub async fn accessibility_violations(&self) -> anyhow::Result<Vec<String>> {
        let source = std::fs::read_to_string(AXE).with_context(|| {
            format!("{AXE} is missing: run `npm ci --prefix tests/browser` (scripts/test does)")
        })?;
        // Evaluated by the driver, not loaded by the page: the page's
        // policy allows no script from elsewhere, and needs not.
        let loaded = self
            .script(&format!("{source}\nreturn typeof axe.run;"), &[])
            .await?;
        ensure!(loaded == "function", "axe-core did not load: {loaded}");
        let found = self
            .script_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: { type: 'tag',
                     values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                   .then(results => done(results.violations
                       .filter(v => v.impact === 'serious' || v.impact === 'critical')
                       .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' — '
                           + v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(error => done(['axe failed: ' + error]));",
                &[],
            )
            .await?;
        let lines = found
            .as_array()
            .with_context(|| format!("axe-core answered {found}"))?;
        Ok(lines
            .iter()
            .map(|line| {
                line.as_str()
                    .map_or_else(|| line.to_string(), str::to_owned)
            })
            .collect())
    }

    /// The browser console's messages since the last call (CSP violations
    /// and script errors among them), as `LEVEL message` lines.
    pub async fn console_messages(&self) -> anyhow::Result<Vec<String>> {
        let entries = self
            .command("POST", &self.at("/se/log"), &json!({ "type": "browser" }))
            .await?;
        Ok(entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| format!("{} {}", entry["level"], entry["message"]))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Makes the viewport `width` × `height` CSS pixels, as a phone's or a
    /// desktop's (a window cannot be made narrower than the desktop's
    /// minimum, so the viewport is emulated); narrower than 800 px is a
    /// phone (touch, the page's viewport meta in force).
    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.command(
            "POST",
            &self.at("/goog/cdp/execute"),
            &json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 1,
                    "mobile": width < 800,
                },
            }),
        )
        .await
        .map(drop)
    }

    /// Makes pages see `prefers-color-scheme: dark` (or light).
    pub async fn prefer_dark(&self, dark: bool) -> anyhow::Result<()> {
        let scheme = if dark { "dark" } else { "light" };
        self.command(
            "POST",
            &self.at("/goog/cdp/execute"),
            &json!({
                "cmd": "Emulation.setEmulatedMedia",
                "params": { "features": [{ "name": "prefers-color-scheme", "value": scheme }] },
            }),
        )
        .await
        .map(drop)
    }

    /// The page's cookies, as the browser stores them.
    pub async fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        let cookies = self.command("GET", &self.at("/cookie"), &json!({})).await?;
        Ok(cookies.as_array().cloned().unwrap_or_default())
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        let image = self
            .command("GET", &self.at("/screenshot"), &json!({}))
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(image.as_str().context("no screenshot")?)
            .context("the screenshot is not base64")
    }
}

impl Browser {
    /// Closes the browser, then the driver.
    pub async fn quit(self) -> anyhow::Result<()> {
        self.command("DELETE", &self.at(""), &json!({}))
            .await
            .map(drop)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection (ChromeDriver speaks no
/// HTTP/1.0 and keeps connections open): status and body.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    use http_body_util::{BodyExt as _, Full};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driving = tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(Full::new(hyper::body::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    driving.abort();
    Ok((status, body))
}
