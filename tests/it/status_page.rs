//! The status page in a real browser: Debian's headless Chromium loads the page of a running
//! lookout whose scheduled targets (loopback servers) are up, down, and blocked by a dependency.
//! Screenshots at 1280×800 and 390×844 are saved as artifacts (`target/test-artifacts/`), the DOM
//! the browser built is checked for the banner, the root-cause line, 90 day bars per row and the
//! graph, and basic accessibility is checked: contrast of the state colours, text alternatives
//! for every image, and keyboard focus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::support::daemon;
use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::Lookout;

/// Where screenshots go: kept after the run, beside the build.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium with `args` on `url` (a profile of its own, no network but loopback),
/// as a child of tokio's so the in-process lookout it loads keeps serving, killed after 60 s
/// (a guard against a hang, not a timing assertion).
async fn chromium(bin: &Path, profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    let child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox", // root in CI; the page is ours, on loopback
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("chromium finished within 60s")
        .expect("run chromium")
}

/// WCAG relative luminance of `#rrggbb`.
fn luminance(hex: &str) -> f64 {
    let c = |i: usize| {
        let v = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * c(1) + 0.7152 * c(3) + 0.0722 * c(5)
}

fn contrast(a: &str, b: &str) -> f64 {
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// The value of CSS custom property `--name` in `css` (the first, i.e. the light scheme's).
fn css_var<'a>(css: &'a str, name: &str) -> &'a str {
    let key = format!("--{name}:");
    let at = css
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in the page's CSS"))
        + key.len();
    &css[at..at + 7]
}

#[tokio::test]
async fn the_status_page_in_chromium() {
    let Some(bin) = daemon::binary(
        "chromium",
        &["/usr/bin/chromium"],
        "chromium",
        "the_status_page_in_chromium",
    ) else {
        return;
    };
    let up = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let failing = HttpTarget::new()
        .route("/", Route::status(503, "down"))
        .start()
        .await;
    let yaml = format!(
        "modules:\n  http: {{prober: http, timeout: 1s}}\n\
         defaults: {{interval: 500ms, retries: 0}}\n\
         status: {{title: Home lab, group_by: group, refresh: 0s}}\n\
         targets:\n\
         - {{name: postgres, module: http, target: \"{db}\", labels: {{group: data}}}}\n\
         - {{name: teslamate, module: http, target: \"{db}\", depends_on: [postgres], labels: {{group: apps}}}}\n\
         - {{name: wiki, module: http, target: \"{wiki}\", labels: {{group: apps}}}}\n\
         - {{name: grafana, module: http, target: \"{grafana}\", labels: {{group: apps}}}}\n",
        db = failing.url("/"),
        wiki = up.url("/"),
        grafana = failing.url("/"),
    );
    let lk = Lookout::start(&yaml).await;
    // Settled: postgres and grafana down, teslamate blocked by postgres, wiki up.
    for _ in 0..200 {
        let j = lk.get("/api/v1/status").await.body;
        if j.contains("\"overall\":\"degraded\"")
            && j.contains("\"state\":\"blocked\"")
            && j.contains("\"state\":\"up\"")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://{}/status", lk.addr);
    let profile = tempfile::tempdir().unwrap();
    let dir = artifacts();
    for (w, h) in [(1280, 800), (390, 844)] {
        let shot = dir.join(format!("status-{w}x{h}.png"));
        let _ = std::fs::remove_file(&shot);
        let out = chromium(
            &bin,
            profile.path(),
            &[
                &format!("--window-size={w},{h}"),
                &format!("--screenshot={}", shot.display()),
            ],
            &url,
        )
        .await;
        let png = std::fs::read(&shot).unwrap_or_else(|e| {
            panic!(
                "no screenshot {} ({e}); chromium said: {}",
                shot.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
        assert!(
            png.len() > 5_000,
            "a nearly empty screenshot: {}",
            shot.display()
        );
        eprintln!("status page screenshot: {}", shot.display());
    }
    let out = chromium(&bin, profile.path(), &["--dump-dom"], &url).await;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<html"),
        "no DOM: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The banner with the root-cause line.
    assert!(dom.contains("class=\"banner degraded\""), "{dom}");
    assert!(
        dom.contains("teslamate affected — cause: postgres down since"),
        "{dom}"
    );
    assert!(dom.contains("cause: grafana down since"), "{dom}");
    // Four rows, each with 90 day bars.
    assert_eq!(dom.matches("class=\"bars\"").count(), 4, "{dom}");
    for bars in dom.split("class=\"bars\"").skip(1) {
        let bars = &bars[..bars.find("</svg>").unwrap()];
        // One tooltip per day, with or without data.
        assert_eq!(bars.matches("<title>").count(), 90, "{bars}");
    }
    // The graph, with postgres ringed as the root cause and teslamate drawn above it.
    assert!(dom.contains("class=\"graph\""), "{dom}");
    assert!(dom.contains("postgres: down (root cause)"), "{dom}");
    assert!(dom.contains("teslamate: blocked"), "{dom}");

    // Accessibility. State colours: white text on each at 4.5:1 at least (WCAG AA).
    let css = &dom[dom.find("<style>").unwrap()..dom.find("</style>").unwrap()];
    for state in ["up", "down", "blocked", "unknown", "maint"] {
        let c = css_var(css, state);
        let ratio = contrast(c, "#ffffff");
        assert!(ratio >= 4.5, "--{state} {c} against white: {ratio:.2}");
    }
    // Body text on both schemes' backgrounds.
    assert!(contrast(css_var(css, "fg"), css_var(css, "bg")) >= 7.0);
    // Every image has a text alternative.
    for svg in dom.split("<svg").skip(1) {
        let tag = &svg[..svg.find('>').unwrap()];
        assert!(
            tag.contains("role=\"img\"")
                && (tag.contains("aria-label=") || tag.contains("aria-labelledby=")),
            "an svg without a text alternative: <svg{tag}>"
        );
    }
    // Keyboard: targets are links (focusable in order), and focus is visible.
    assert!(dom.contains("href=\"/status/target/postgres\""), "{dom}");
    assert!(css.contains(":focus-visible"), "no focus style");
    // State is written out, not only coloured.
    assert!(
        dom.contains(">blocked</span>")
            && dom.contains(">down</span>")
            && dom.contains(">up</span>")
    );
}
