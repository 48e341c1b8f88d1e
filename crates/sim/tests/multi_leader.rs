//! Multi-leader keyspaces in the simulator, across seeds: replicas
//! converge, nothing acknowledged is lost, every LWW discard is reported,
//! and no write removes a sibling it did not see (see
//! `tandem_sim::multi_leader`). `TANDEM_SIM_SEEDS=N` runs N seeds (default
//! 1000) from `TANDEM_SIM_SEED_START`; `TANDEM_SIM_SEED=N` runs one.

use tandem_sim::env_u64;
use tandem_sim::multi_leader::run_ml_seed;

#[test]
fn multi_leader_replicas_converge_lose_no_acked_write_and_report_every_discard() {
    if let Some(seed) = env_u64("TANDEM_SIM_SEED") {
        let r = run_ml_seed(seed, true).unwrap_or_else(|e| panic!("{e}"));
        println!("{r:?}");
        return;
    }
    let count = env_u64("TANDEM_SIM_SEEDS").unwrap_or(1000);
    let start = env_u64("TANDEM_SIM_SEED_START").unwrap_or(0);
    let (mut acked, mut conflicts, mut crashes) = (0, 0, 0);
    for seed in start..start + count {
        match run_ml_seed(seed, false) {
            Ok(r) => {
                acked += r.acked;
                conflicts += r.conflicts;
                crashes += r.crashes;
            }
            Err(e) => {
                panic!("{e}\nreproduce: TANDEM_SIM_SEED={seed} cargo test --release -p tandem-sim --test multi_leader")
            }
        }
    }
    println!("{count} seeds: {acked} acked writes, {conflicts} conflict records, {crashes} crashes");
    assert!(acked > 0 && conflicts > 0 && crashes > 0, "the runs exercised nothing");
}
