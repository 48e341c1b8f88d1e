//! The dashboard at the admin port's `/` (issue 14 item 3), rendered by a
//! real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) loads the page from a node of a real 3-node cluster, runs its
//! JavaScript against `/dashboard/state`, and the test reads the DOM it
//! built. Set `TANDEM_SKIP_BROWSER_TESTS=1` to skip on a machine without
//! Chromium (the test says so instead of passing silently otherwise).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, ELECT};
use common::eventually;

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

#[test]
fn the_dashboard_shows_the_leader_the_followers_and_their_lag_and_follows_a_switchover() {
    let Some(browser) = chromium() else {
        if std::env::var("TANDEM_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: no chromium on this machine (TANDEM_SKIP_BROWSER_TESTS=1)");
            return;
        }
        panic!("this test needs a headless browser: apt-get install chromium (or set TANDEM_SKIP_BROWSER_TESTS=1)");
    };
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
