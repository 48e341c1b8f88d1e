//! The dashboard at the admin port's `/` (issue 14 item 3), rendered by a
//! real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) loads the page from a node of a real 3-node cluster, runs its
//! JavaScript against `/dashboard/state`, and the test reads the DOM it
//! built. Set `TANDEM_SKIP_BROWSER_TESTS=1` to skip on a machine without
//! Chromium (the test says so instead of passing silently otherwise).
//!
//! One cluster serves every check (the nodes archive their logs and inject
//! faults), so the whole file starts three nodes once per test.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, ELECT};
use common::{admin_request, eventually};

/// The browser binary, if installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().map(|o| o.status.success()).unwrap_or(false))
}

/// The DOM after the page ran its first polls (virtual time lets its
/// timers and fetches run without waiting in real time).
fn rendered_dom(browser: &str, admin: SocketAddr) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("http://{admin}/"))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn role_row(id: u64, role: &str) -> String {
    format!("<tr data-node=\"{id}\" data-role=\"{role}\">")
}

/// The numbers in the page's lag cells.
fn lag_cells(dom: &str) -> Vec<u64> {
    dom.split("class=\"num lag-ms\">").skip(1).filter_map(|rest| rest.split('<').next()?.parse().ok()).collect()
}

/// The text of the element with `id` (the page gives the archive cells ids).
fn by_id<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let rest = dom.split(&format!("id=\"{id}\">")).nth(1)?;
    rest.split('<').next()
}

fn browser() -> Option<&'static str> {
    match chromium() {
        Some(b) => Some(b),
        None if std::env::var("TANDEM_SKIP_BROWSER_TESTS").as_deref() == Ok("1") => {
            eprintln!("skipped: no chromium on this machine (TANDEM_SKIP_BROWSER_TESTS=1)");
            None
        }
        None => {
            panic!("this test needs a headless browser: apt-get install chromium (or set TANDEM_SKIP_BROWSER_TESTS=1)")
        }
    }
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::tandem_bin()).args(args).output().expect("run tandem");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_page_shows_every_replicas_lag_the_archive_lag_against_its_budget_and_the_conflict_feed() {
    let Some(browser) = browser() else { return };
    let repo = common::tempdir();
    let repo_path = repo.path().to_str().unwrap().to_string();
    let c = Cluster::start(3, None, |_| {
        ["--fault-injection", "--backup-repo", &repo_path, "--archive-interval-ms", "100", "--rpo-max-ms", "60000"]
            .map(String::from)
            .to_vec()
    });
    let leader = c.wait_leader(None);
    c.wait_streaming(&(1..=3).filter(|&id| id != leader).collect::<Vec<_>>());
    let mut raw = c.node(leader).raw();
    for i in 0..50 {
        raw.cmd(&["SET", &format!("k{i}"), "v"]);
    }

    // A follower's page: every replica's role and lag (probed), and this
    // node's archive, shipped and within its budget.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut dom = String::new();
    let shown = eventually(ELECT, || {
        dom = rendered_dom(browser, c.node(follower).admin_addr());
        dom.contains(&role_row(leader, "leader"))
            && (1..=3).filter(|&id| id != leader).all(|id| dom.contains(&role_row(id, "follower")))
            && lag_cells(&dom).len() == 3
            && by_id(&dom, "archive-lsn").and_then(|v| v.parse::<u64>().ok()).is_some_and(|lsn| lsn >= 50)
    });
    assert!(shown, "follower {follower}'s page lacks every replica's lag or its archive:\n{dom}");
    assert!(by_id(&dom, "archive-lag-lsn").and_then(|v| v.parse::<u64>().ok()).is_some(), "{dom}");
    assert!(by_id(&dom, "archive-lag-ms").and_then(|v| v.parse::<u64>().ok()).is_some(), "{dom}");
    assert_eq!(by_id(&dom, "archive-budget"), Some("yes"), "the archive is not shown within its 60 s budget:\n{dom}");
    assert!(dom.contains("60000 ms"), "the RPO budget is not shown:\n{dom}");

    // A conflict in a multi-leader keyspace reaches the feed on the page.
    let admin = c.node(leader).admin_addr().to_string();
    let mut created = (false, String::new());
    let ok = eventually(ELECT, || {
        created = cli(&[
            "keyspace",
            "create",
            "reviews",
            "--prefix",
            "rev:",
            "--mode",
            "multi-leader",
            "--conflict",
            "lww",
            "--admin",
            &admin,
        ]);
        created.0
    });
    assert!(ok, "keyspace create failed: {}", created.1);
    let engines = eventually(ELECT, || {
        (1..=3).all(|id| c.node(id).admin_get("/keyspaces").contains("\"engine\":\"multi-leader\""))
    });
    assert!(engines, "not every node runs the multi-leader keyspace");
    let (a, b) = (leader, follower);
    let cut = |id: u64, body: &str| {
        let (code, text) = admin_request(c.node(id).admin_addr(), "POST", "/faults", body, None);
        assert_eq!(code, 200, "POST /faults {body}: {text}");
    };
    cut(a, &format!("{{\"cut\":[{b}]}}"));
    cut(b, &format!("{{\"cut\":[{a}]}}"));
    assert_eq!(c.node(b).raw().cmd(&["SET", "rev:photo", &format!("from-{b}")]).text(), "OK");
    assert_eq!(c.node(a).raw().cmd(&["SET", "rev:photo", &format!("from-{a}")]).text(), "OK");
    cut(a, "{}");
    cut(b, "{}");
    let mut page_node = 0;
    let recorded = eventually(ELECT, || {
        page_node =
            [a, b].into_iter().find(|&id| c.node(id).admin_get("/conflicts").contains("rev:photo")).unwrap_or(0);
        page_node != 0
    });
    assert!(recorded, "no node recorded the conflict on rev:photo\n{}", c.stderrs());
    let shown = eventually(Duration::from_secs(10), || {
        dom = rendered_dom(browser, c.node(page_node).admin_addr());
        dom.contains("class=\"conflict-key\">rev:photo<")
    });
    assert!(shown, "node {page_node}'s page does not show the conflict on rev:photo:\n{dom}");
    let row = dom.split("class=\"conflict-key\">rev:photo<").nth(1).unwrap();
    let row = row.split("</tr>").next().unwrap();
    assert!(row.contains(">lww<"), "the policy is missing from the conflict row: {row}");
    assert!(row.contains(&format!("node {a}")) && row.contains(&format!("node {b}")), "origins missing: {row}");
    assert!(row.contains("class=\"conflict-outcome\">"), "outcome missing: {row}");
    assert!(dom.contains(">reviews<"), "the keyspace is missing:\n{dom}");
}

#[test]
fn the_dashboard_shows_the_leader_the_followers_and_their_lag_and_follows_a_switchover() {
    let Some(browser) = browser() else { return };
    let c = Cluster::start(3, None, |_| Vec::new());
    let leader = c.wait_leader(None);
    let mut raw = c.node(leader).raw();
    for i in 0..100 {
        raw.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();

    // Served by the leader: it knows every follower's lag.
    let admin = c.node(leader).admin_addr();
    let mut dom = String::new();
    let shown = eventually(ELECT, || {
        dom = rendered_dom(browser, admin);
        dom.contains(&role_row(leader, "leader"))
            && followers.iter().all(|&f| dom.contains(&role_row(f, "follower")))
            && lag_cells(&dom).len() == 3
    });
    assert!(shown, "the page does not show leader {leader}, followers {followers:?} and three lag values:\n{dom}");
    assert!(dom.contains("streaming"), "followers are not shown streaming:\n{dom}");
    assert!(dom.contains("bootstrap"), "the event log (bootstrap election) is missing:\n{dom}");
    assert!(dom.contains("id=\"archive-none\""), "a node without an archive must say so:\n{dom}");
    assert!(dom.contains("no conflicts recorded"), "the empty conflict feed must say so:\n{dom}");

    // After a switchover the same page shows the new leader.
    let target = followers[0];
    let out = Command::new(common::tandem_bin())
        .args(["switchover", "--to", &target.to_string(), "--admin"])
        .arg(admin.to_string())
        .output()
        .expect("run tandem switchover");
    assert!(out.status.success(), "switchover failed: {}", String::from_utf8_lossy(&out.stderr));
    let moved = eventually(Duration::from_secs(10), || {
        dom = rendered_dom(browser, admin);
        dom.contains(&role_row(target, "leader")) && dom.contains(&role_row(leader, "follower"))
    });
    assert!(moved, "after the switchover to node {target} the page still shows:\n{dom}");
    assert!(dom.contains("switchover"), "the switchover event is not listed:\n{dom}");
}

#[test]
fn the_dashboard_page_needs_no_token_but_its_data_does() {
    let data = common::tempdir();
    let secrets = common::tempdir();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "dashboard-secret-token\n").unwrap();
    let server = common::TestServer::start(data.path(), &["--admin-token-file", token_file.to_str().unwrap()]);
    let page = common::http_get(server.admin_addr(), "/").expect("GET /");
    assert!(page.contains("Tandem dashboard"), "{page}");
    let state = common::http_get(server.admin_addr(), "/dashboard/state").unwrap_or_else(|e| e);
    assert!(state.contains("401"), "the state document must need the token: {state}");
}
