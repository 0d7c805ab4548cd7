//! A tiny W3C WebDriver client for the page's browser tests: starts
//! `chromedriver` on a free 127.0.0.1 port, opens one headless Chromium
//! session at 360×800, and speaks WebDriver's JSON over plain HTTP/1.1
//! (std `TcpStream` + serde_json). Every wait is bounded; the session and
//! chromedriver (and with it Chromium) are ended on drop.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's packages put them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to answer its status.
const DRIVER_START: Duration = Duration::from_secs(10);

/// How long one WebDriver command may take (a new session starts Chromium).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether this machine has both; a test without them prints why it
/// skips and returns.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium 360 px wide; None (with
    /// the reason printed) if either does not start in time.
    pub fn start() -> Option<Browser> {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("webdriver: cannot start chromedriver: {e}"))
            .ok()?;
        let profile = tempfile::tempdir().expect("tempdir");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let started = Instant::now();
        let ready = loop {
            if let Ok(v) = browser.call("GET", "/status", None) {
                if v["value"]["ready"] == true {
                    break true;
                }
            }
            if started.elapsed() > DRIVER_START {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !ready {
            eprintln!("webdriver: chromedriver not ready within {DRIVER_START:?}");
            return None;
        }
        let profile_dir = browser._profile.path().display().to_string();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=360,800",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={profile_dir}")])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The window cannot be narrower than 500 px in headless mode;
            // a 360 px device is emulated instead.
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "mobileEmulation": {"deviceMetrics": {"width": 360, "height": 800, "pixelRatio": 1.0}},
            },
        }}});
        match browser.call("POST", "/session", Some(&caps)) {
            Ok(v) => match v["value"]["sessionId"].as_str() {
                Some(id) => browser.session = id.to_owned(),
                None => {
                    eprintln!("webdriver: no session: {v}");
                    return None;
                }
            },
            Err(e) => {
                eprintln!("webdriver: no session: {e}");
                return None;
            }
        }
        Some(browser)
    }

    /// Loads `url` (waits for the document to load).
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns
    /// its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        let v = self
            .call(
                "POST",
                &path,
                Some(&json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        v["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// Clicks an element found by [`Browser::find`].
    pub fn click(&self, element: &str) {
        self.session_call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// Types `text` into an element.
    pub fn type_into(&self, element: &str, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    /// Waits up to `timeout` for `script` to return something truthy;
    /// returns its last value.
    pub fn wait_for(&self, timeout: Duration, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.eval(script, json!([]));
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy || started.elapsed() > timeout {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match self.call(method, &path, Some(&body)) {
            Ok(v) if v["value"]["error"].is_string() => panic!("webdriver {path}: {v}"),
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("webdriver {path}: {e}"),
        }
    }

    /// One WebDriver request; the JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(COMMAND_TIMEOUT)).ok();
        s.set_write_timeout(Some(COMMAND_TIMEOUT)).ok();
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps connections open: read the head, then exactly
        // Content-Length bytes.
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let started = Instant::now();
        loop {
            if let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if let Some(length) = length {
                    if out.len() >= split + 4 + length {
                        return serde_json::from_slice(&out[split + 4..split + 4 + length])
                            .map_err(|e| format!("{e}"));
                    }
                }
            }
            if started.elapsed() > COMMAND_TIMEOUT {
                return Err("timed out".into());
            }
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no HTTP head")?;
        serde_json::from_slice(&out[split + 4..]).map_err(|e| format!("{e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
