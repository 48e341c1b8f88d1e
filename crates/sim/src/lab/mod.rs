//! `tandem lab`: the replication lesson's trade-offs reproduced on the
//! deterministic simulator, with measured numbers and plots.
//!
//! Owns the scenario registry ([`SCENARIOS`]), the report every scenario
//! produces ([`LabReport`]: the question, the setup, a table, a reading of
//! the numbers, plots) and its three renderings: text for the terminal,
//! JSON for machines, and a self-contained HTML page (inline SVG, no
//! script, no network) plus an index. Each scenario drives the real
//! replication cores through a simulated world in virtual time with fixed
//! region latencies and a measured disk; the same seed gives byte-identical
//! output.
//!
//! Must never read a real clock or a real RNG (the simulator's rule), or
//! print anything itself: the CLI decides where reports go.

mod conflicts;
mod delete;
mod disaster;
mod global_reviews;
mod log_shipping;
mod ml_net;
mod photo_app;
pub mod plot;
mod quorum;
mod replication;
mod sessions;
mod single_box;

use std::fmt::Write as _;

use serde::Serialize;

pub use plot::{Kind, Plot, Series};

/// One lab scenario.
pub struct Scenario {
    /// Its name (`tandem lab run NAME`).
    pub name: &'static str,
    /// The question it answers, in one line.
    pub question: &'static str,
    /// Runs it for a seed.
    pub run: fn(u64) -> Result<LabReport, String>,
}

/// Every scenario, in the order `tandem lab list` shows them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sync-vs-async",
        question: "What does waiting for a replica 100 ms away cost per write, and what does not waiting lose when the leader dies?",
        run: replication::sync_vs_async,
    },
    Scenario {
        name: "stale-read",
        question: "After updating my profile photo, how often does my reload show the old one, under each session guarantee?",
        run: sessions::stale_read,
    },
    Scenario {
        name: "failover",
        question: "When leaders crash and get partitioned, how many acknowledged writes does each ack policy lose, and are they all accounted for?",
        run: replication::failover,
    },
    Scenario {
        name: "conflicts",
        question: "When two regions write the same keys, what does last-writer-wins silently drop, and what do siblings and a CRDT keep?",
        run: conflicts::conflicts,
    },
    Scenario {
        name: "quorum",
        question: "With one replica far away, how often is a read stale for W+R<=N against W+R>N, and how fast does a replica that missed writes catch up with read repair against anti-entropy alone?",
        run: quorum::quorum,
    },
    Scenario {
        name: "log-shipping",
        question: "Why ship row effects instead of statements: how many keys diverge when replicas replay NOW()- and RANDOM()-like commands?",
        run: log_shipping::log_shipping,
    },
    Scenario {
        name: "delete-everywhere",
        question: "A FLUSHALL typed on the leader: how fast does it empty every replica, and does the archive bring the data back?",
        run: delete::delete_everywhere,
    },
    Scenario {
        name: "single-box",
        question: "One node or three: what do the extra machines buy in availability, durability and read throughput, and why do writes not scale?",
        run: single_box::single_box,
    },
    Scenario {
        name: "disaster",
        question: "A whole region is lost: what do nightly same-site backups, off-site backups and a continuous off-site archive lose (RPO), and how long until service (RTO)?",
        run: disaster::disaster,
    },
    Scenario {
        name: "photo-app",
        question: "A photo app with users in the US, EU and Asia on one US leader: what does each read routing cost per region, and who sees their old profile photo?",
        run: photo_app::photo_app,
    },
    Scenario {
        name: "global-reviews",
        question: "A shop in the US, EU and Asia: what do multi-leader reviews and single-leader inventory cost per region, and what conflicts or oversells does each placement give?",
        run: global_reviews::global_reviews,
    },
];

/// The scenario named `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// The scenario's name.
    pub name: String,
    /// Its question.
    pub question: String,
    /// The seed it ran with.
    pub seed: u64,
    /// The setup, as (what, value) pairs.
    pub setup: Vec<(String, String)>,
    /// Table column headers.
    pub columns: Vec<String>,
    /// Table rows (as many cells as columns).
    pub rows: Vec<Vec<String>>,
    /// A paragraph that reads the numbers.
    pub reading: String,
    /// Plots.
    pub plots: Vec<Plot>,
}

impl LabReport {
    /// The report for a terminal: question, setup, table, reading.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} (seed {})", self.name, self.seed);
        let _ = writeln!(out, "{}\n", self.question);
        for (k, v) in &self.setup {
            let _ = writeln!(out, "  {k}: {v}");
        }
        out.push('\n');
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).chain([self.columns[i].len()]).max()
            })
            .map(|w| w.unwrap_or(0))
            .collect();
        let line = |cells: &[String]| {
            let mut l = String::from("  ");
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i == 0 {
                    l.push_str(c);
                    l.push_str(&" ".repeat(pad));
                } else {
                    l.push_str(&" ".repeat(pad + 2));
                    l.push_str(c);
                }
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&self.columns));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        let _ = writeln!(out, "\n{}", wrap(&self.reading, 78));
        out
    }

    /// A self-contained HTML page.
    pub fn html(&self) -> String {
        let mut out = page_head(&format!("Tandem lab: {}", self.name));
        let _ = write!(
            out,
            "<p><a href=\"index.html\">all scenarios</a></p><h1>{}</h1><p class=\"q\">{}</p><p class=\"meta\">seed {}</p>",
            esc(&self.name),
            esc(&self.question),
            self.seed
        );
        out.push_str("<h2>Setup</h2><table>");
        for (k, v) in &self.setup {
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
        }
        out.push_str("</table><h2>Measured</h2><table><tr>");
        for c in &self.columns {
            let _ = write!(out, "<th>{}</th>", esc(c));
        }
        out.push_str("</tr>");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
            out.push_str("</tr>");
        }
        let _ = write!(out, "</table><h2>Reading</h2><p>{}</p>", esc(&self.reading));
        for p in &self.plots {
            let _ = write!(out, "<figure>{}</figure>", p.svg());
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// The index page linking every report.
pub fn index_html(reports: &[LabReport]) -> String {
    let mut out = page_head("Tandem lab");
    out.push_str("<h1>Tandem lab</h1><p>Every scenario ran on the deterministic simulator (real replication cores, virtual time). Same seed, same bytes.</p><table><tr><th>scenario</th><th>question</th><th>seed</th></tr>");
    for r in reports {
        let _ = write!(
            out,
            "<tr><td><a href=\"{}.html\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.name),
            esc(&r.question),
            r.seed
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

fn page_head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font:15px/1.5 system-ui,sans-serif;max-width:900px;margin:24px auto;padding:0 16px;color:#1d2330}}\
         table{{border-collapse:collapse;margin:8px 0}}th,td{{text-align:left;padding:4px 10px;border-bottom:1px solid #e4e7ec}}\
         th{{color:#667085;font-weight:500}}.q{{font-size:17px}}.meta{{color:#667085}}figure{{margin:16px 0}}</style></head><body>",
        esc(title)
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Wraps text at `width` columns (for the terminal).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split_whitespace() {
        if col > 0 && col + 1 + word.len() > width {
            out.push('\n');
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_gives_byte_identical_output_for_a_seed() {
        for s in SCENARIOS {
            let a = (s.run)(7).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let b = (s.run)(7).unwrap();
            assert_eq!(a.html(), b.html(), "{} differs between two runs of seed 7", s.name);
            assert_eq!(a.text(), b.text());
            assert!(!a.rows.is_empty() && !a.plots.is_empty(), "{} measured nothing", s.name);
            assert!(a.rows.iter().all(|r| r.len() == a.columns.len()), "{}: ragged table", s.name);
        }
    }
}
