use super::*;

const LEASE: LeaseConfig = LeaseConfig { lease_ms: 1000, clock_drift_percent: 10 };

#[test]
fn leader_lease_is_shorter_than_the_follower_promise_by_the_drift_bound() {
    assert_eq!(LEASE.leader_lease_ms(), 818);
    assert_eq!(LeaseConfig { lease_ms: 1000, clock_drift_percent: 0 }.leader_lease_ms(), 1000);
    assert!(LeaseConfig { lease_ms: 0, clock_drift_percent: 0 }.validate().is_err());
    assert!(LeaseConfig { lease_ms: 10, clock_drift_percent: 51 }.validate().is_err());
}

#[test]
fn lease_needs_a_majority_of_grants() {
    // Five voters: the leader needs two follower grants.
    let mut k = LeaseKeeper::new(LEASE, &[2, 3, 4, 5], 5);
    assert_eq!(k.valid_until(), None);
    k.handle_grant(2, 100);
    assert!(!k.is_valid(150));
    k.handle_grant(3, 300);
    // The second-newest stamp (100) bounds the lease.
    assert_eq!(k.valid_until(), Some(100 + 818));
    assert!(k.is_valid(917) && !k.is_valid(918));
    k.handle_grant(4, 500);
    assert_eq!(k.valid_until(), Some(300 + 818));
    // A stale echo never moves the lease back; strangers are ignored.
    k.handle_grant(4, 200);
    k.handle_grant(9, 10_000);
    assert_eq!(k.valid_until(), Some(300 + 818));
}

#[test]
fn single_node_cluster_always_holds_its_lease() {
    let k = LeaseKeeper::new(LEASE, &[], 1);
    assert!(k.is_valid(u64::MAX - 1));
}

#[test]
fn follower_cannot_fence_while_its_grant_binds() {
    let mut g = LeaseGrantor::new(LEASE, 3, 0);
    // A restarted node acts as if it granted at start.
    assert_eq!(g.try_fence(500, 3), Err(StillBound { remaining_ms: 500 }));
    assert!(g.handle_request(600, 3));
    assert_eq!(g.try_fence(1599, 3), Err(StillBound { remaining_ms: 1 }));
    assert_eq!(g.try_fence(1600, 3), Ok(4));
    // Fenced: the old epoch's requests are refused; fencing again is a no-op.
    assert!(!g.handle_request(1700, 3));
    assert_eq!(g.try_fence(1700, 3), Ok(4));
    assert!(g.handle_request(1800, 4));
}

#[test]
fn old_leader_lease_ends_before_the_fence_under_extreme_drift() {
    // Leader clock 10 % slow, follower clock 10 % fast: the worst case.
    // Real time t (ms); leader clock = 0.9 t; follower clock = 1.1 t.
    let mut k = LeaseKeeper::new(LEASE, &[2, 3], 3);
    let mut g = LeaseGrantor::new(LEASE, 1, 0);
    let real_send = 10_000.0f64;
    let stamp = (real_send * 0.9) as u64;
    // Delivered instantly.
    assert!(g.handle_request((real_send * 1.1) as u64, 1));
    k.handle_grant(2, stamp);
    // Earliest real time the follower may fence.
    let mut t = real_send;
    while g.clone().try_fence((t * 1.1) as u64, 1).is_err() {
        t += 1.0;
    }
    // At that real time the leader's lease is over by its own clock.
    assert!(!k.is_valid((t * 0.9) as u64), "lease still valid at real {t}");
}

fn report(epoch: Epoch, since: u64, last_epoch: Epoch, last: Lsn) -> NodeReport {
    NodeReport {
        epoch,
        leading: false,
        lease_valid: false,
        since_leader_ms: since,
        last_entry_epoch: last_epoch,
        last_lsn: last,
    }
}

#[test]
fn assess_fences_only_when_a_majority_lost_the_leader() {
    let members = [1, 2, 3];
    let mut reports = BTreeMap::new();
    reports.insert(2, report(5, 900, 5, 10));
    reports.insert(3, report(5, 100, 5, 10));
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Healthy);
    reports.insert(3, report(5, 600, 5, 12));
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Fence { old_epoch: 5, targets: vec![2, 3] });
    // A node already fenced (higher epoch) counts as lost, and the leader is
    // fenced too so that it stops renewing its lease.
    reports.insert(3, report(6, 0, 5, 12));
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Fence { old_epoch: 5, targets: vec![1, 2, 3] });
    // One answer out of three is not enough.
    reports.remove(&3);
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Healthy);
    // A leader that restarted (answers, not leading) counts as lost and is
    // fenced with the others.
    reports.insert(1, report(5, 0, 5, 10));
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Fence { old_epoch: 5, targets: vec![1, 2, 3] });
    // A single-node cluster recovers from its own restart.
    let mut alone = BTreeMap::new();
    alone.insert(1, report(5, 0, 5, 10));
    assert_eq!(assess(&[1], Some(1), 5, &alone, 500), Assessment::Fence { old_epoch: 5, targets: vec![1] });
    // A live leader is healthy.
    alone.insert(1, NodeReport { leading: true, ..report(5, 0, 5, 10) });
    assert_eq!(assess(&[1], Some(1), 5, &alone, 500), Assessment::Healthy);
}

#[test]
fn a_failover_stopped_half_way_is_finished_by_fencing_the_leader_too() {
    // Found by the failover simulator (seeds 80, 128): node 3 fenced epoch
    // 5, node 2 was still bound by the leader's lease, which the leader keeps
    // renewing. Node 3 can never follow epoch 5 again; without fencing the
    // leader (which stops its renewals) the cluster never converges.
    let members = [1, 2, 3];
    let mut reports = BTreeMap::new();
    reports.insert(1, NodeReport { leading: true, lease_valid: true, ..report(5, 0, 5, 12) });
    reports.insert(2, report(5, 10, 5, 12));
    reports.insert(3, report(6, 0, 5, 12));
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Fence { old_epoch: 5, targets: vec![1, 2, 3] });
    // Without a fenced member nothing changes.
    reports.insert(3, report(5, 10, 5, 12));
    assert_eq!(assess(&members, Some(1), 5, &reports, 500), Assessment::Healthy);
}

#[test]
fn a_restarted_leader_never_leads_the_same_epoch_again() {
    // Promoted after a fence: the floor already equals the new epoch.
    assert!(may_lead(4, 4, 3));
    assert!(may_lead(5, 4, 3));
    // Fenced past the map: wait for the next promotion.
    assert!(!may_lead(4, 5, 3));
    // It led epoch 4, crashed and came back while the map still names it
    // (seed 347 of the failover simulator): its followers may hold entries
    // of epoch 4 it lost, so it must not write new ones under epoch 4.
    assert!(!may_lead(4, 4, 4));
}

#[test]
fn bootstrap_picks_the_most_up_to_date_of_a_majority() {
    let members = [1, 2, 3];
    let mut reports = BTreeMap::new();
    reports.insert(1, report(2, 0, 2, 50));
    assert!(matches!(assess(&members, None, 0, &reports, 500), Assessment::Wait(_)));
    reports.insert(3, report(4, 0, 3, 40));
    assert_eq!(assess(&members, None, 0, &reports, 500), Assessment::Bootstrap { leader: 3, epoch: 5 });
}

fn fenced(list: &[(NodeId, Epoch, Lsn)]) -> BTreeMap<NodeId, FencedNode> {
    list.iter().map(|&(id, e, l)| (id, FencedNode { last_entry_epoch: e, last_lsn: l })).collect()
}

#[test]
fn promotion_picks_the_highest_epoch_then_lsn() {
    let f = fenced(&[(2, 3, 100), (3, 4, 90)]);
    assert_eq!(choose_leader(&AckPolicy::Async, &[1, 2, 3], 1, &f), Ok(3));
    let f = fenced(&[(2, 4, 100), (3, 4, 100)]);
    assert_eq!(choose_leader(&AckPolicy::Async, &[1, 2, 3], 1, &f), Ok(2));
}

#[test]
fn promotion_waits_for_a_majority_of_fences() {
    let f = fenced(&[(2, 1, 10)]);
    assert!(choose_leader(&AckPolicy::Async, &[1, 2, 3], 1, &f).unwrap_err().contains("1 of 3 members fenced"));
    // An old leader that restarted (it only fences then) counts, holds what
    // it acknowledged, and satisfies any policy.
    let f = fenced(&[(1, 1, 10), (2, 1, 12)]);
    assert_eq!(choose_leader(&AckPolicy::All, &[1, 2, 3], 1, &f), Ok(2));
    assert_eq!(choose_leader(&AckPolicy::Any(2), &[1, 2, 3], 1, &fenced(&[(1, 1, 10)])).ok(), None);
    assert_eq!(choose_leader(&AckPolicy::Any(1), &[1], 1, &fenced(&[(1, 1, 10)])), Ok(1));
}

#[test]
fn promotion_under_any_k_needs_every_possible_acker_set_covered() {
    let members = [1, 2, 3, 4, 5];
    // any 1 over four followers: all four must be fenced.
    let f = fenced(&[(2, 1, 10), (3, 1, 10), (4, 1, 12)]);
    let err = choose_leader(&AckPolicy::Any(1), &members, 1, &f).unwrap_err();
    assert!(err.contains("only 3 followers fenced, 4 needed"), "{err}");
    // any 2: three of four suffice, and the most up-to-date wins.
    assert_eq!(choose_leader(&AckPolicy::Any(2), &members, 1, &f), Ok(4));
    // all: any one follower holds every acknowledged write.
    assert_eq!(choose_leader(&AckPolicy::All, &members, 1, &f), Ok(4));
    // first 1 (2,5): an ack may have come from 5, which did not fence.
    let first = AckPolicy::First { k: 1, among: vec![2, 5] };
    assert!(choose_leader(&first, &members, 1, &f).is_err());
    let f = fenced(&[(2, 1, 10), (3, 1, 10), (5, 1, 11)]);
    assert_eq!(choose_leader(&first, &members, 1, &f), Ok(5));
}

#[test]
fn promotion_under_first_k_covers_acks_of_earlier_leaders_too() {
    // Failover simulator, seed 6213: node 1 led epoch 1 and acked a write
    // with node 3 (first 1 of (2,3), node 2 being disconnected). Node 3 was
    // promoted to epoch 2 but cut off before it led or replicated anything.
    // Failing over from node 3, only node 2 (of the policy's nodes) needs to
    // have fenced for node 3's own acks, but the epoch-1 write is on nodes 1
    // and 3 only: promoting node 4 lost it.
    let members = [1, 2, 3, 4, 5];
    let first = AckPolicy::First { k: 1, among: vec![2, 3] };
    let f = fenced(&[(2, 1, 11), (4, 1, 15), (5, 1, 15)]);
    let err = choose_leader(&first, &members, 3, &f).unwrap_err();
    assert!(err.contains("acknowledged by node 1 with 1 of [3]"), "{err}");
    // Once node 1 fenced (it holds its own acked writes), promotion goes on.
    let f = fenced(&[(1, 1, 23), (2, 1, 11), (4, 1, 15), (5, 1, 15)]);
    assert_eq!(choose_leader(&first, &members, 3, &f), Ok(1));
}

fn hist(pairs: &[(Epoch, Lsn)]) -> EpochHistory {
    EpochHistory::from_pairs(pairs.to_vec())
}

#[test]
fn divergence_is_where_the_epochs_of_two_logs_part() {
    let leader = hist(&[(1, 1), (3, 51)]);
    // Same epochs, the follower is behind: nothing to roll back.
    assert_eq!(divergence_point(&leader, 80, &hist(&[(1, 1)]), 40), 40);
    // The old leader of epoch 1 wrote 51..60 that nobody got.
    assert_eq!(divergence_point(&leader, 80, &hist(&[(1, 1)]), 60), 50);
    // A node that led epoch 2 from 41 on: its 41.. never reached the leader.
    assert_eq!(divergence_point(&leader, 80, &hist(&[(1, 1), (2, 41)]), 70), 40);
    // Identical logs.
    assert_eq!(divergence_point(&leader, 80, &leader, 80), 80);
    // A follower past the leader in the leader's own epoch (cannot happen
    // with one leader per epoch, but must not panic): agree up to 80.
    assert_eq!(divergence_point(&leader, 80, &leader, 90), 80);
    // Empty follower.
    assert_eq!(divergence_point(&leader, 80, &EpochHistory::default(), 0), 0);
}

#[test]
fn history_records_only_newer_epochs_and_truncates() {
    let mut h = EpochHistory::default();
    h.record(1, 1);
    h.record(1, 5);
    h.record(2, 10);
    h.record(2, 20);
    assert_eq!(h.pairs(), &[(1, 1), (2, 10)]);
    assert_eq!(h.epoch_at(9), Some(1));
    assert_eq!(h.epoch_at(10), Some(2));
    assert_eq!(h.last_epoch(0), 0);
    h.truncate_after(9);
    assert_eq!(h.pairs(), &[(1, 1)]);
    // A new epoch that starts at or before an existing start replaces it.
    h.record(4, 1);
    assert_eq!(h.pairs(), &[(4, 1)]);
}

#[test]
fn a_start_past_the_log_is_dropped_when_older_epoch_entries_are_appended_there() {
    // Failover simulator, seed 100714: node 2 took a snapshot at 395 from the
    // epoch-8 leader, whose history already named its own start (8, 396)
    // though it had written nothing yet. Node 2 then followed the epoch-9
    // leader, whose entries 396..414 are from epoch 7.
    let mut h = hist(&[(6, 332), (7, 366), (8, 396)]);
    h.record(7, 396);
    assert_eq!(h.pairs(), &[(6, 332), (7, 366)]);
    assert_eq!(h.epoch_at(410), Some(7));
    h.record(9, 415);
    // The real epoch-8 log (entries 396..410) now parts from this one after
    // 395, so its owner rolls them back instead of keeping them.
    let epoch8 = hist(&[(6, 332), (7, 366), (8, 396)]);
    assert_eq!(divergence_point(&h, 444, &epoch8, 410), 395);
}

#[test]
fn failover_messages_round_trip() {
    for m in [
        FailoverRpc::Probe,
        FailoverRpc::Fence { old_epoch: 7 },
        FailoverRpc::Report(report(1, 2, 3, 4)),
        FailoverRpc::Fenced(FencedNode { last_entry_epoch: 3, last_lsn: 9 }),
        FailoverRpc::Bound { remaining_ms: 5 },
        FailoverRpc::Error("x".into()),
    ] {
        assert_eq!(FailoverRpc::decode(&m.encode()).unwrap(), m);
    }
    assert!(FailoverRpc::decode(&[0xff, 0xff]).is_err());
}

#[test]
fn promotion_keeps_the_acknowledged_writes_of_every_keyspace_policy() {
    // Node 1 led a 5-node cluster; nodes 2, 3 and 5 fenced (3 and 5 with
    // shorter logs). The default keyspace's `async` alone lets node 2 be promoted,
    // but a keyspace under `first 1 (4)` may have writes acknowledged by
    // node 1 with node 4 only: the promotion must wait for node 4.
    let members = [1, 2, 3, 4, 5];
    let mut fenced = BTreeMap::new();
    fenced.insert(2, FencedNode { last_entry_epoch: 1, last_lsn: 10 });
    fenced.insert(3, FencedNode { last_entry_epoch: 1, last_lsn: 7 });
    fenced.insert(5, FencedNode { last_entry_epoch: 1, last_lsn: 5 });
    assert_eq!(choose_leader_keeping_all(&[AckPolicy::Async], &members, 1, &fenced), Ok(2));
    let policies = [AckPolicy::Async, AckPolicy::First { k: 1, among: vec![4] }];
    let why = choose_leader_keeping_all(&policies, &members, 1, &fenced).unwrap_err();
    assert!(why.contains("first 1 (4)"), "{why}");
    assert!(choose_leader_keeping_all(&[], &members, 1, &fenced).is_ok());
}
