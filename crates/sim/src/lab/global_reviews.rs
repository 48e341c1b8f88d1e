//! `global-reviews` (guided problem 2): a shop in the US, the EU and Asia.
//! Product reviews live in a multi-leader keyspace (every region writes
//! locally: the real multi-leader replica core, `lww`); inventory lives in
//! a single-leader keyspace led from the US (every order crosses to the
//! leader, which executes it with the real core command execution, so
//! stock is checked and decremented in one place). For contrast, the same
//! orders against inventory in a multi-leader `crdt` keyspace: each region
//! checks its local stock and decrements a counter that merges without
//! losing a decrement, and still oversells.
//!
//! Owns only the workload and the counting. Must never read a real clock
//! or RNG.

use std::collections::BTreeSet;

use bytes::Bytes;
use tandem_core::conflict::{Hlc, Outcome};
use tandem_core::keyspace::ConflictPolicy;
use tandem_core::repl::NodeId;
use tandem_core::resp::Frame;
use tandem_core::store::Store;

use super::log_shipping::execute;
use super::ml_net::MlNet;
use super::plot::{percentile, Kind, Plot, Series};
use super::replication::{DISK_FSYNC, REGION_LINK};
use super::LabReport;
use crate::rng::{Latency, SimRng};

const REGIONS: [&str; 3] = ["US", "EU", "Asia"];
/// One-way latencies (ms) between US-EU, US-Asia, EU-Asia.
const ONE_WAY_MS: [[u64; 3]; 3] = [[0, 100, 150], [100, 0, 180], [150, 180, 0]];
/// Client to its region's node.
const LOCAL_LINK: Latency = Latency { base_us: 500, jitter_us: 300, tail_chance: 0.01, tail_us: 5_000 };
/// Virtual seconds of traffic.
const RUN_S: u64 = 60;
/// Review writes per region per second.
const REVIEW_RATE: u64 = 20;
/// Products.
const PRODUCTS: u64 = 200;
/// Chance that a review write is followed by an edit of the same review
/// from another region within half a second (a moderator, a second device).
const CROSS_EDIT: f64 = 0.03;
/// A flash sale: orders per region per second for `SALE_S` seconds, SKUs,
/// and starting stock per SKU.
const ORDER_RATE: u64 = 30;
const SALE_S: u64 = 10;
const SKUS: u64 = 20;
const STOCK: u64 = 10;

fn link(a: usize, b: usize) -> Latency {
    if a == b {
        return LOCAL_LINK;
    }
    Latency { base_us: ONE_WAY_MS[a][b] * 1000, ..REGION_LINK }
}

fn links() -> Vec<Vec<Latency>> {
    (0..3).map(|a| (0..3).map(|b| link(a, b)).collect()).collect()
}

struct Reviews {
    p50: [f64; 3],
    acked: u64,
    feed: u64,
    discarded: u64,
}

fn reviews(seed: u64) -> Result<Reviews, String> {
    let mut rng = SimRng::new(seed);
    let mut net = MlNet::new(seed ^ 0x5eed, ConflictPolicy::Lww, links(), DISK_FSYNC);
    // (time µs, region, product, author region, edit number)
    let mut ops: Vec<(u64, usize, u64, usize, u64)> = Vec::new();
    for r in 0..3 {
        let mut t = 0;
        let mut n = 0;
        loop {
            t += 1 + rng.exp(1_000_000 / REVIEW_RATE);
            if t >= RUN_S * 1_000_000 {
                break;
            }
            n += 1;
            let product = rng.below(PRODUCTS);
            ops.push((t, r, product, r, n));
            if rng.chance(CROSS_EDIT) {
                let other = (r + 1 + rng.below(2) as usize) % 3;
                ops.push((t + rng.below(500_000), other, product, r, n));
            }
        }
    }
    ops.sort();
    let mut submitted: Vec<(u64, usize, u64)> = Vec::new();
    for (t, region, product, author, n) in ops {
        net.advance_to(t, RUN_S * 1_000_000 + 5_000_000)?;
        let key = format!("review:{product}:{}", REGIONS[author]);
        let text = format!("{} stars, edit {n} from {}", 1 + n % 5, REGIONS[region]);
        let token = net.command(region as NodeId + 1, &["SET", &key, &text]);
        submitted.push((token, region, t));
    }
    net.settle()?;
    let mut lat: [Vec<f64>; 3] = Default::default();
    let mut acked = 0;
    for (token, region, t) in submitted {
        if let Some((Frame::Simple(_) | Frame::Bulk(_), at)) = net.replies.get(&token) {
            acked += 1;
            // Plus the client's round trip to its region's node.
            lat[region].push((*at - t) as f64 / 1000.0 + 1.0);
        }
    }
    let mut feed = 0;
    let mut discarded: BTreeSet<(NodeId, Hlc)> = BTreeSet::new();
    for id in 1..=3 {
        for item in net.node(id).conflicts(0, usize::MAX) {
            feed += 1;
            if item.record.outcome == Outcome::Discarded {
                for v in item.record.versions.iter().filter(|v| !v.kept) {
                    discarded.insert((v.origin, v.hlc));
                }
            }
        }
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 50.0)
    };
    let [a, b, c] = &mut lat;
    Ok(Reviews { p50: [p50(a), p50(b), p50(c)], acked, feed, discarded: discarded.len() as u64 })
}

/// Orders: (time µs, region, sku), the same for both inventories.
fn orders(seed: u64) -> Vec<(u64, usize, u64)> {
    let mut rng = SimRng::new(seed);
    let mut out = Vec::new();
    for r in 0..3 {
        let mut t = 0;
        loop {
            t += 1 + rng.exp(1_000_000 / ORDER_RATE);
            if t >= SALE_S * 1_000_000 {
                break;
            }
            out.push((t, r, rng.below(SKUS)));
        }
    }
    out.sort();
    out
}

struct Inventory {
    p50: [f64; 3],
    accepted: u64,
    oversold: u64,
}

/// Single leader in the US: each order crosses to the leader, which checks
/// and decrements the stock in one step, acknowledges after its fsync.
fn inventory_single_leader(seed: u64, orders: &[(u64, usize, u64)]) -> Result<Inventory, String> {
    let mut rng = SimRng::new(seed);
    let mut store = Store::new(seed);
    for s in 0..SKUS {
        let args = [Bytes::from_static(b"SET"), Bytes::from(format!("stock:{s}")), Bytes::from(STOCK.to_string())];
        execute(&mut store, 0, &args)?;
    }
    let mut arrivals: Vec<(u64, usize, u64, u64)> =
        orders.iter().map(|&(t, r, s)| (t + link(r, 0).sample(&mut rng), r, s, t)).collect();
    arrivals.sort();
    let mut lat: [Vec<f64>; 3] = Default::default();
    let mut accepted = 0;
    for (arrive, r, sku, t) in arrivals {
        let key = Bytes::from(format!("stock:{sku}"));
        let now_ms = arrive / 1000;
        let stock = match store.get(&key, now_ms) {
            Some((tandem_core::store::ValueRef::Str(v), _)) => {
                std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0)
            }
            _ => 0,
        };
        if stock > 0 {
            execute(&mut store, now_ms, &[Bytes::from_static(b"DECR"), key])?;
            accepted += 1;
        }
        let back = link(0, r).sample(&mut rng);
        let done = arrive + DISK_FSYNC.sample(&mut rng) + back;
        lat[r].push((done - t) as f64 / 1000.0);
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 50.0)
    };
    let [a, b, c] = &mut lat;
    Ok(Inventory { p50: [p50(a), p50(b), p50(c)], accepted, oversold: accepted.saturating_sub(SKUS * STOCK) })
}

/// Multi-leader crdt: each region checks its own copy of the stock, then
/// decrements a counter that merges every decrement.
fn inventory_multi_leader(seed: u64, orders: &[(u64, usize, u64)]) -> Result<Inventory, String> {
    let mut net = MlNet::new(seed, ConflictPolicy::Crdt, links(), DISK_FSYNC);
    let stock = STOCK.to_string();
    for s in 0..SKUS {
        net.command(1, &["INCRBY", &format!("stock:{s}"), &stock]);
    }
    net.advance_to(2_000_000, RUN_S * 1_000_000 + 5_000_000)?;
    let mut lat: [Vec<f64>; 3] = Default::default();
    let mut pending = Vec::new();
    for &(t, r, sku) in orders {
        let t = t + 2_000_000;
        net.advance_to(t, RUN_S * 1_000_000 + 5_000_000)?;
        let key = format!("stock:{sku}");
        let node = r as NodeId + 1;
        let get = net.command(node, &["GET", &key]);
        let have = match net.replies.get(&get) {
            Some((Frame::Bulk(b), _)) => std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0),
            _ => 0,
        };
        if have > 0 {
            pending.push((net.command(node, &["DECR", &key]), r, t));
        }
    }
    net.settle()?;
    let mut accepted = 0;
    for (token, r, t) in pending {
        if let Some((Frame::Integer(_), at)) = net.replies.get(&token) {
            accepted += 1;
            lat[r].push((*at - t) as f64 / 1000.0 + 1.0);
        }
    }
    let mut oversold = 0u64;
    for s in 0..SKUS {
        let get = net.command(1, &["GET", &format!("stock:{s}")]);
        if let Some((Frame::Bulk(b), _)) = net.replies.get(&get) {
            let v = std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
            oversold += v.min(0).unsigned_abs();
        }
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 50.0)
    };
    let [a, b, c] = &mut lat;
    Ok(Inventory { p50: [p50(a), p50(b), p50(c)], accepted, oversold })
}

/// `global-reviews`.
pub fn global_reviews(seed: u64) -> Result<LabReport, String> {
    let rv = reviews(seed.wrapping_mul(7).wrapping_add(1))?;
    let ord = orders(seed.wrapping_mul(7).wrapping_add(2));
    let single = inventory_single_leader(seed.wrapping_mul(7).wrapping_add(3), &ord)?;
    let multi = inventory_multi_leader(seed.wrapping_mul(7).wrapping_add(4), &ord)?;
    let f = |x: f64| format!("{x:.1}");
    let rows = vec![
        vec![
            "reviews".into(),
            "multi-leader, lww".into(),
            f(rv.p50[0]),
            f(rv.p50[1]),
            f(rv.p50[2]),
            format!("{} writes", rv.acked),
            format!("{} feed records, {} edits discarded", rv.feed, rv.discarded),
        ],
        vec![
            "inventory".into(),
            "single leader in US".into(),
            f(single.p50[0]),
            f(single.p50[1]),
            f(single.p50[2]),
            format!("{} of {} orders", single.accepted, ord.len()),
            format!("{} oversold", single.oversold),
        ],
        vec![
            "inventory (don't)".into(),
            "multi-leader, crdt counter".into(),
            f(multi.p50[0]),
            f(multi.p50[1]),
            f(multi.p50[2]),
            format!("{} of {} orders", multi.accepted, ord.len()),
            format!("{} oversold", multi.oversold),
        ],
    ];
    let reading = format!(
        "Reviews written where the customer is were acknowledged in {:.1} / {:.1} / {:.1} ms (US / EU / Asia): the \
         local node's fsync and nothing else. The price is conflicts: when a review was edited from a second region \
         within half a second, the regions disagreed until they exchanged versions; the conflict feeds of the three nodes hold {} records: \
         last-writer-wins discarded {} edits out of {} writes — acceptable for review text, visible in \
         the feed. Inventory from the single leader in the US cost {:.1} ms in the US but {:.0} ms from the EU and \
         {:.0} ms from Asia (a round trip to the leader), and sold exactly {} of {} units with {} oversold: one \
         place decides. Put the same stock in a multi-leader crdt counter and every order is local again \
         ({:.1} / {:.1} / {:.1} ms), no decrement is lost in the merge, and yet {} sales were of units that did \
         not exist: each region checked its own copy of the stock before hearing of the others' sales.",
        rv.p50[0],
        rv.p50[1],
        rv.p50[2],
        rv.feed,
        rv.discarded,
        rv.acked,
        single.p50[0],
        single.p50[1],
        single.p50[2],
        single.accepted,
        SKUS * STOCK,
        single.oversold,
        multi.p50[0],
        multi.p50[1],
        multi.p50[2],
        multi.oversold,
    );
    let mut bars = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        bars.push(Series { name: format!("reviews {r}"), points: vec![(0.0, rv.p50[i])] });
    }
    for (i, r) in REGIONS.iter().enumerate() {
        bars.push(Series { name: format!("stock {r}"), points: vec![(0.0, single.p50[i])] });
    }
    Ok(LabReport {
        name: "global-reviews".into(),
        question: super::find("global-reviews").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("regions".into(), "US, EU, Asia; one way US-EU 100 ms, US-Asia 150 ms, EU-Asia 180 ms; clients 0.5-2 ms from their region's node".into()),
            (
                "reviews".into(),
                format!("multi-leader keyspace (lww), {REVIEW_RATE} writes/s per region for {RUN_S} s on {PRODUCTS} products; {:.0}% are edited again from another region within 0.5 s", CROSS_EDIT * 100.0),
            ),
            (
                "inventory".into(),
                format!("{SKUS} SKUs with {STOCK} units each, a flash sale of {ORDER_RATE} orders/s per region for {SALE_S} s; single leader in the US (check and decrement at the leader) or multi-leader crdt (check the local copy, DECR)"),
            ),
        ],
        columns: ["data", "placement", "write p50 US ms", "EU ms", "Asia ms", "acknowledged", "conflicts / oversold"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        plots: vec![Plot {
            title: "Write latency per region: local reviews vs inventory at the US leader (p50)".into(),
            x_label: "data and region".into(),
            y_label: "ms".into(),
            kind: Kind::Bars,
            log_x: false,
            series: bars,
        }],
    })
}
