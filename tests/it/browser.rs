//! A real headless Chromium for the dashboard tests, driven through
//! chromedriver (WebDriver) with fantoccini. `ci/browser-deps.sh` installs
//! Debian's `chromium` and `chromium-driver`; without them these tests fail
//! with that instruction, they never skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Host name that resolves to 127.0.0.1 inside the browser only. Chromium
/// treats `localhost` and `127.0.0.1` as secure contexts (it keeps Secure
/// cookies there over plain HTTP); this name is an ordinary insecure origin.
pub const INSECURE_HOST: &str = "relay.test";

/// One browser at a time: Chromium is heavy and CI has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tool(var: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} not found: the dashboard tests need Debian's chromium and chromium-driver \
         (run `bash ci/browser-deps.sh`, or set {var})",
        path.display()
    );
    path
}

/// Where screenshots go: `target/e2e-screenshots/` (CI keeps them as artifacts).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("e2e-screenshots")
}

pub struct Browser {
    pub client: Client,
    driver: Driver,
    test: String,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium profile; `test`
    /// prefixes the screenshot names.
    pub async fn launch(test: &str) -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let chromium = tool("RELAY_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("RELAY_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        // Its own process group, so Drop can end Chromium with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("spawn chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"),
                    // Keep plain http://relay.test:<port> plain.
                    "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
                ],
            }),
        );
        let mut driver = Some(driver);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    kill_group(driver.as_mut().unwrap());
                    panic!("cannot start Chromium through chromedriver: {e}");
                }
            }
        };
        Browser {
            client,
            driver: Driver(driver.take().unwrap()),
            test: test.to_string(),
            _profile: profile,
            _turn: turn,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Path and query of the current page.
    pub async fn here(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits (10 s at most) until `css` matches an element.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "`{css}` never appeared on {}: {e}\n{}",
                self.here().await,
                self.client.source().await.unwrap_or_default()
            ),
        }
    }

    /// Fills the login form and submits it.
    pub async fn log_in(&self, base: &str, name: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        self.client
            .find(Locator::Css("#name"))
            .await
            .unwrap()
            .send_keys(name)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("#password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        self.click("#login-form button[type=submit]").await;
        self.wait_for("body").await;
    }

    /// The value of a cookie the browser kept for the current site.
    pub async fn cookie(&self, name: &str) -> Option<KeptCookie> {
        let all = self.client.get_all_cookies().await.unwrap();
        all.iter().find(|c| c.name() == name).map(|c| KeptCookie {
            http_only: c.http_only().unwrap_or(false),
            secure: c.secure().unwrap_or(false),
            same_site: c.same_site().map(|s| format!("{s:?}")),
        })
    }

    /// Saves `target/e2e-screenshots/<test>-<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).unwrap();
    }

    /// Ends the WebDriver session (Chromium exits), then chromedriver.
    pub async fn close(self) {
        let Browser { client, driver, .. } = self;
        // Ending chromedriver's process group ends Chromium in any case;
        // this only lets Chromium exit cleanly first.
        if tokio::time::timeout(Duration::from_secs(5), client.close())
            .await
            .is_err()
        {
            eprintln!("Chromium did not close within 5 s; killing it");
        }
        drop(driver);
    }
}

/// The attributes of a cookie as the browser stored it.
#[derive(Debug)]
pub struct KeptCookie {
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<String>,
}

fn kill_group(child: &mut Child) {
    // `--`: a negative pid names a process group, not a signal.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// chromedriver, and with it Chromium (same process group), ended on drop:
/// also when a failing test never reaches `close`.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}
