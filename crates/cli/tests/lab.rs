//! `tandem lab` through the binary: every scenario runs, prints its table
//! and reading, writes self-contained HTML, and the same seed gives the
//! same bytes (issue 14 item 1).

mod common;

use std::process::Command;

/// Every scenario issue 14 asks for.
const SCENARIOS: [&str; 11] = [
    "sync-vs-async",
    "stale-read",
    "failover",
    "conflicts",
    "quorum",
    "log-shipping",
    "delete-everywhere",
    "single-box",
    "disaster",
    "photo-app",
    "global-reviews",
];

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
    for name in SCENARIOS {
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
    let pages: Vec<String> =
        std::iter::once("index.html".to_string()).chain(SCENARIOS.iter().map(|s| format!("{s}.html"))).collect();
    for page in &pages {
        let pa = std::fs::read(a.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let pb = std::fs::read(b.join(page)).unwrap();
        assert_eq!(pa, pb, "{page} differs between two runs of seed 3");
        let html = String::from_utf8(pa).unwrap();
        assert!(
            !html.contains("<script") && !html.contains("src=") && !html.contains("href=\"http"),
            "{page} is not self-contained"
        );
        if page != "index.html" {
            assert!(html.contains("<table>") && html.contains("Reading"), "{page} lacks its table or reading");
            assert!(html.contains("<svg"), "{page} has no plot");
            let svg = std::fs::read_to_string(a.join(page.replace(".html", "-1.svg"))).expect("the first plot as SVG");
            assert!(svg.starts_with("<svg xmlns=") && html.contains(svg.trim_end()), "{page}: its SVG file differs");
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

/// One scenario's report as JSON, for a fixed seed.
fn report(name: &str) -> serde_json::Value {
    let (ok, out, err) = lab(&["run", name, "--seed", "5", "--json"]);
    assert!(ok, "{name}: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    assert_eq!(doc["name"], name);
    doc
}

fn rows(doc: &serde_json::Value) -> Vec<Vec<String>> {
    doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect())
        .collect()
}

/// The first number in a cell ("12.5%" -> 12.5, "0 oversold" -> 0).
fn num(cell: &str) -> f64 {
    let start = cell.find(|c: char| c.is_ascii_digit()).unwrap_or_else(|| panic!("no number in {cell:?}"));
    let rest = &cell[start..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|_| panic!("bad number in {cell:?}"))
}

fn row<'a>(rows: &'a [Vec<String>], first: &str) -> &'a [String] {
    rows.iter().find(|r| r[0] == first).unwrap_or_else(|| panic!("no row {first:?} in {rows:?}"))
}

#[test]
fn every_scenario_measures_a_table_of_numbers_a_reading_and_a_plot() {
    for name in SCENARIOS {
        let doc = report(name);
        let cols = doc["columns"].as_array().unwrap().len();
        let rows = rows(&doc);
        assert!(!rows.is_empty(), "{name}: no rows");
        for r in &rows {
            assert_eq!(r.len(), cols, "{name}: ragged row {r:?}");
        }
        let numbers = rows.iter().flatten().filter(|c| c.chars().any(|ch| ch.is_ascii_digit())).count();
        assert!(numbers >= rows.len(), "{name}: the table has hardly any numbers: {rows:?}");
        let reading = doc["reading"].as_str().unwrap();
        assert!(reading.len() > 200 && reading.chars().any(|c| c.is_ascii_digit()), "{name}: reading {reading:?}");
        let plots = doc["plots"].as_array().unwrap();
        assert!(!plots.is_empty(), "{name}: no plot");
        for p in plots {
            let points: usize =
                p["series"].as_array().unwrap().iter().map(|s| s["points"].as_array().unwrap().len()).sum();
            assert!(points > 0, "{name}: an empty plot {:?}", p["title"]);
        }
    }
}

#[test]
fn quorum_overlapping_reads_are_never_stale_and_w1_r1_reads_are() {
    let rows = rows(&report("quorum"));
    assert!(num(&row(&rows, "W=1 R=1")[7]) > 0.0, "{rows:?}");
    for q in ["W=2 R=2", "W=3 R=1"] {
        assert_eq!(num(&row(&rows, q)[7]), 0.0, "{q}: {rows:?}");
    }
    // The EU pays for overlap: its W=2 R=2 reads wait for a US replica.
    assert!(num(&row(&rows, "W=2 R=2")[5]) > 150.0, "{rows:?}");
    // Read repair fixes half the missed keys before anti-entropy alone does.
    let rr = num(&row(&rows, "W=2 R=2, read repair + anti-entropy")[7].replace("50% at", ""));
    let ae = num(&row(&rows, "W=2 R=2, anti-entropy only")[7].replace("50% at", ""));
    assert!(rr <= ae, "read repair {rr} ms vs anti-entropy {ae} ms");
}

#[test]
fn log_shipping_statements_diverge_and_row_effects_never_do() {
    let rows = rows(&report("log-shipping"));
    for r in &rows {
        assert_eq!((num(&r[4]), num(&r[5])), (0.0, 0.0), "row effects diverged: {r:?}");
    }
    assert_eq!(num(&rows[0][2]) + num(&rows[0][3]), 0.0, "deterministic statements diverged: {rows:?}");
    assert!(num(&rows[1][3]) > 0.0 && num(&rows[2][3]) > 0.0, "clock/random statements did not diverge: {rows:?}");
}

#[test]
fn delete_everywhere_empties_every_follower_and_the_archive_restores() {
    let rows = rows(&report("delete-everywhere"));
    for r in &rows[..2] {
        assert_eq!(num(&r[4]), 0.0, "a follower kept keys after FLUSHALL: {r:?}");
        assert!(num(&r[3]) >= 100.0, "the flush reached a follower 100 ms away too early: {r:?}");
    }
    for r in &rows[2..] {
        let (ok, want) = r[5].split_once('/').unwrap();
        assert_eq!(num(ok), num(want), "restore incomplete: {r:?}");
        assert!(num(&r[4]) > 0.0, "{r:?}");
    }
}

#[test]
fn single_box_reads_scale_with_nodes_and_writes_do_not() {
    let rows = rows(&report("single-box"));
    assert!(num(&row(&rows, "throughput, reads (GET)")[3]) > 2.0, "{rows:?}");
    assert!(num(&row(&rows, "throughput, writes (SET)")[3]) <= 1.0, "{rows:?}");
    assert!(row(&rows, "acknowledged writes lost with it")[2].starts_with("0 of"), "{rows:?}");
}

#[test]
fn disaster_archive_loses_seconds_where_nightly_backups_lose_hours() {
    let rows = rows(&report("disaster"));
    assert_eq!(rows[0][1], "everything", "{rows:?}");
    assert!(rows[1][1].ends_with(" h") && rows[2][1].ends_with(" s"), "{rows:?}");
    assert!(num(&rows[2][3]) < num(&rows[1][3]), "{rows:?}");
}

#[test]
fn photo_app_token_reads_never_show_the_old_photo_and_unguarded_ones_do() {
    let rows = rows(&report("photo-app"));
    let stale = |mode: &str| -> f64 {
        rows.iter().filter(|r| r[0] == mode).map(|r| num(r[5].split('/').next().unwrap())).sum()
    };
    assert!(stale("local follower, no guarantee") > 0.0, "{rows:?}");
    assert_eq!(stale("local follower + token"), 0.0, "{rows:?}");
    assert_eq!(stale("leader only"), 0.0, "{rows:?}");
    // Uploads cross the ocean from Asia whatever the reads do.
    assert!(rows.iter().filter(|r| r[1] == "Asia").all(|r| num(&r[2]) > 250.0), "{rows:?}");
}

#[test]
fn global_reviews_are_local_and_single_leader_inventory_never_oversells() {
    let rows = rows(&report("global-reviews"));
    let reviews = row(&rows, "reviews");
    assert!((2..5).all(|i| num(&reviews[i]) < 20.0), "reviews are not local: {reviews:?}");
    let single = row(&rows, "inventory");
    assert_eq!(single[6], "0 oversold", "{single:?}");
    assert!(num(&single[3]) > 150.0 && num(&single[4]) > 150.0, "EU/Asia orders did not cross to the US: {single:?}");
    assert!(num(&row(&rows, "inventory (don't)")[6]) > 0.0, "{rows:?}");
}

#[test]
fn conflicts_crdt_cart_loses_nothing_and_lww_discards_are_in_the_feed() {
    let rows = rows(&report("conflicts"));
    assert_eq!(num(&row(&rows, "crdt")[6]), 0.0, "{rows:?}");
    let lww = row(&rows, "lww");
    assert!(num(&lww[3]) > 0.0 && num(&lww[2]) > 0.0, "{lww:?}");
}

/// The number at the start of a table cell (`12`, `3.5`, `12.0%`).
fn number(cell: &serde_json::Value) -> Option<f64> {
    cell.as_str()?.trim_end_matches('%').parse().ok()
}

#[test]
fn lab_real_runs_the_workload_on_a_real_cluster_and_prints_real_numbers_beside_the_simulated_ones() {
    let (ok, out, err) = lab(&["run", "stale-read", "--real", "--json"]);
    assert!(ok, "{err}");
    assert!(err.contains("against a real local cluster"), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let columns: Vec<&str> = doc["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let col = |name: &str| {
        columns.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name:?} column: {columns:?}"))
    };
    let (sim_reads, sim_rate) = (col("own reads"), col("stale rate"));
    let (real_reads, real_rate) = (col("real own reads"), col("real stale rate"));
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{out}");
    for row in rows {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), columns.len(), "ragged row {row:?}");
        for i in [sim_reads, sim_rate, real_reads, real_rate] {
            assert!(number(&row[i]).is_some(), "column {:?} of {row:?} is not a number", columns[i]);
        }
        assert!(number(&row[real_reads]).unwrap() > 0.0, "no real reads in {row:?}");
    }
    // Leader-only reads are never stale, on the real cluster too.
    let strong = rows.iter().find(|r| r[0] == "strong").expect("a strong row");
    assert_eq!(number(&strong[real_rate]), Some(0.0), "{strong:?}");
    let setup = doc["setup"].as_array().unwrap();
    assert!(setup.iter().any(|s| s[0].as_str().unwrap_or("").starts_with("real: ")), "{setup:?}");
}

#[test]
fn lab_real_names_the_scenarios_it_cannot_run_and_why() {
    let (ok, _, err) = lab(&["run", "single-box", "--real"]);
    assert!(!ok, "single-box --real must not pass as if it had run");
    assert!(err.contains("single-box: not available with --real: "), "{err}");
}
