//! `tandem lab list|run`: the replication trade-offs reproduced on the
//! deterministic simulator (`tandem_sim::lab`), printed as a table and a
//! reading, and written as self-contained HTML pages with SVG plots.
//!
//! Owns the command line and where reports go (stdout, `--json`, `--out
//! DIR`); what a scenario measures lives in `tandem_sim::lab`. With
//! `--real`, [`real`] also runs a scaled-down workload against a real local
//! cluster and adds its numbers beside the simulated ones.

mod real;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use tandem_sim::lab::{self, LabReport, SCENARIOS};

/// Arguments of `tandem lab`.
#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// One line per scenario: its name and the question it answers.
    List,
    /// Run one scenario (or --all) and print its table and reading; with
    /// --out, also write DIR/NAME.html, each plot as DIR/NAME-N.svg, and
    /// DIR/index.html.
    Run {
        /// The scenario (see `tandem lab list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Run every scenario.
        #[arg(long)]
        all: bool,
        /// The seed: the same seed gives byte-identical output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for the HTML reports and SVG plots (created if missing).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also run a scaled-down workload against a real local cluster
        /// (3 `tandem server` processes started like `tandem up`, temporary
        /// data, free ports, region delays injected with /faults) and print
        /// its numbers beside the simulated ones (`real ...` columns).
        /// Available for sync-vs-async, stale-read and failover; real
        /// numbers depend on the machine, not on the seed.
        #[arg(long)]
        real: bool,
    },
}

/// Runs `tandem lab ...`.
pub fn run(args: LabArgs) -> ExitCode {
    match args.command {
        LabCommand::List => {
            let width = SCENARIOS.iter().map(|s| s.name.len()).max().unwrap_or(0);
            for s in SCENARIOS {
                println!("{:<width$}  {}", s.name, s.question);
            }
            ExitCode::SUCCESS
        }
        LabCommand::Run { name, all, seed, out, json, real } => {
            let chosen: Vec<&lab::Scenario> = if all {
                SCENARIOS.iter().collect()
            } else {
                let name = name.unwrap_or_default();
                match lab::find(&name) {
                    Some(s) => vec![s],
                    None => {
                        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                        eprintln!("tandem lab: no scenario named {name:?} (known: {})", names.join(", "));
                        return ExitCode::FAILURE;
                    }
                }
            };
            if real && !all {
                if let Err(why) = real::runner(chosen[0].name) {
                    eprintln!("tandem lab: {why}");
                    return ExitCode::from(2);
                }
            }
            let mut reports = Vec::new();
            for s in chosen {
                let started = Instant::now();
                eprintln!("tandem lab: running {} (seed {seed}) ...", s.name);
                let result = (s.run)(seed).and_then(|mut r| {
                    if !real {
                        return Ok(r);
                    }
                    match real::runner(s.name) {
                        Ok(run) => {
                            let started = Instant::now();
                            eprintln!("tandem lab: running {} against a real local cluster ...", s.name);
                            let measured = run(seed).map_err(|e| format!("the real run failed: {e}"))?;
                            eprintln!("tandem lab: real run done in {:.1} s", started.elapsed().as_secs_f64());
                            real::merge(&mut r, measured);
                        }
                        Err(why) => eprintln!("tandem lab: {why}"),
                    }
                    Ok(r)
                });
                match result {
                    Ok(r) => {
                        eprintln!("tandem lab: {} done in {:.1} s", s.name, started.elapsed().as_secs_f64());
                        if !json {
                            println!("{}", r.text());
                        }
                        reports.push(r);
                    }
                    Err(e) => {
                        eprintln!("tandem lab: {} failed (seed {seed}): {e}", s.name);
                        return ExitCode::FAILURE;
                    }
                }
            }
            if json {
                let doc = if reports.len() == 1 {
                    serde_json::to_string_pretty(&reports[0])
                } else {
                    serde_json::to_string_pretty(&reports)
                };
                println!("{}", doc.expect("a report serializes"));
            }
            if let Some(dir) = out {
                if let Err(e) = write_html(&dir, &reports) {
                    eprintln!("tandem lab: cannot write the reports to {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("tandem lab: wrote {}", dir.join("index.html").display());
            }
            ExitCode::SUCCESS
        }
    }
}

/// Writes each report's page, each plot as `NAME-N.svg` (for embedding
/// elsewhere, e.g. a README) and an index of the pages now in `dir`.
fn write_html(dir: &Path, reports: &[LabReport]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for r in reports {
        std::fs::write(dir.join(format!("{}.html", r.name)), r.html())?;
        for (i, p) in r.plots.iter().enumerate() {
            std::fs::write(dir.join(format!("{}-{}.svg", r.name, i + 1)), format!("{}\n", p.svg()))?;
        }
    }
    std::fs::write(dir.join("index.html"), lab::index_html(reports))
}
