//! `tandem lab` through the binary: every scenario runs, prints its table
//! and reading, writes self-contained HTML, and the same seed gives the
//! same bytes (issue 14 item 1).

mod common;

use std::process::Command;

fn lab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::tandem_bin()).arg("lab").args(args).output().expect("run tandem lab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lab_list_names_every_scenario_with_its_question() {
    let (ok, out, err) = lab(&["list"]);
    assert!(ok, "{err}");
    for name in ["sync-vs-async", "stale-read", "failover"] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        assert!(line.trim_end().ends_with('?'), "no question on {line:?}");
    }
}

#[test]
fn lab_run_all_writes_html_reports_and_the_same_seed_gives_the_same_bytes() {
    let dir = common::tempdir();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let (ok, text, err) = lab(&["run", "--all", "--seed", "3", "--out", a.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(text.contains("== sync-vs-async (seed 3)") && text.contains("p99 ms"), "{text}");
    let (ok, text_b, err) = lab(&["run", "--all", "--seed", "3", "--out", b.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(text, text_b, "the same seed printed different text");
    for page in ["index.html", "sync-vs-async.html", "stale-read.html", "failover.html"] {
        let pa = std::fs::read(a.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let pb = std::fs::read(b.join(page)).unwrap();
        assert_eq!(pa, pb, "{page} differs between two runs of seed 3");
        let html = String::from_utf8(pa).unwrap();
        assert!(
            !html.contains("<script") && !html.contains("src=") && !html.contains("href=\"http"),
            "{page} is not self-contained"
        );
        if page != "index.html" {
            assert!(html.contains("<svg"), "{page} has no plot");
        }
    }
}

#[test]
fn lab_json_is_machine_readable_and_an_unknown_scenario_is_refused() {
    let (ok, out, err) = lab(&["run", "sync-vs-async", "--json"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(doc["name"], "sync-vs-async");
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // async acknowledges after the leader's fsync; any 1 after a 200 ms round trip.
    let p50 = |i: usize| rows[i][2].as_str().unwrap().parse::<f64>().unwrap();
    assert!(p50(0) < 5.0 && p50(1) > 200.0, "{rows:?}");
    let (ok, _, err) = lab(&["run", "no-such-scenario"]);
    assert!(!ok && err.contains("no scenario named") && err.contains("sync-vs-async"), "{err}");
}
