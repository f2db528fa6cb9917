//! Property: a ledger with one-entry caches over the SQLite store, driven
//! as the writer drives it (look up what is missing, supply it, apply,
//! write, settle) and restarted from the store at random points, answers
//! every command exactly as a ledger that keeps everything in memory.
//! Bounded memory must not change a single answer.
#![cfg(feature = "server")]

use baton::authority::BudgetScope;
use baton::caveat::Unit;
use baton::keys::BlockId;
use baton::ledger::{
    CacheSizes, Command, IdemKey, Ledger, Missing, Operation, Outcome, ResId, ReserveRequest,
};
use baton::proof::ProofId;
use baton::store::Store;
use baton::store::sqlite::SqliteStore;
use proptest::prelude::*;

const GRACE: u64 = 100;

/// The tree 0 → 1 → {2, 3}; scopes nearest first.
fn chain(leaf: u8) -> Vec<BlockId> {
    match leaf {
        0 => vec![BlockId([0; 32])],
        1 => vec![BlockId([0; 32]), BlockId([1; 32])],
        _ => vec![BlockId([0; 32]), BlockId([1; 32]), BlockId([leaf; 32])],
    }
}

fn scopes(leaf: u8) -> Vec<BudgetScope> {
    let ceilings = [40u64, 20, 8, 8];
    (0..=leaf.min(1))
        .chain((leaf >= 2).then_some(leaf))
        .rev()
        .map(|b| {
            BudgetScope::new(
                usize::from(b.min(2)),
                BlockId([b; 32]),
                Unit::Calls,
                ceilings[usize::from(b)],
                None,
            )
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Step {
    Reserve {
        leaf: u8,
        amount: u64,
        ttl: u64,
        spend: Option<u64>,
        key: u8,
    },
    Commit {
        leaf: u8,
        res: u8,
        actual: u64,
        key: u8,
    },
    Release {
        leaf: u8,
        res: u8,
        key: u8,
    },
    Extend {
        leaf: u8,
        res: u8,
        ttl: u64,
        key: u8,
    },
    Get {
        leaf: u8,
        res: u8,
    },
    Replay {
        key: u8,
    },
    /// A client retry: the n-th earlier command, sent again as it was.
    Retry {
        n: u8,
    },
    Tick {
        ms: u64,
    },
    Revoke {
        block: u8,
    },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let leaf = 1u8..4;
    prop_oneof![
        4 => (leaf.clone(), 1u64..6, 1u64..3000, prop::option::of(0u64..8), 0u8..12)
            .prop_map(|(leaf, amount, ttl, spend, key)| Step::Reserve { leaf, amount, ttl, spend, key }),
        3 => (leaf.clone(), 0u8..16, 0u64..8, 0u8..12)
            .prop_map(|(leaf, res, actual, key)| Step::Commit { leaf, res, actual, key }),
        2 => (leaf.clone(), 0u8..16, 0u8..12).prop_map(|(leaf, res, key)| Step::Release { leaf, res, key }),
        1 => (leaf.clone(), 0u8..16, 1u64..3000, 0u8..12)
            .prop_map(|(leaf, res, ttl, key)| Step::Extend { leaf, res, ttl, key }),
        1 => (0u8..4, 0u8..16).prop_map(|(leaf, res)| Step::Get { leaf, res }),
        1 => (0u8..12).prop_map(|key| Step::Replay { key }),
        3 => any::<u8>().prop_map(|n| Step::Retry { n }),
        2 => (0u64..2500).prop_map(|ms| Step::Tick { ms }),
        1 => (2u8..4).prop_map(|block| Step::Revoke { block }),
        1 => Just(Step::Restart),
    ]
}

/// A holder-bound request's proof id for some keys, none for the others:
/// records with and without one go through the store.
fn proof(key: u8, what: &str) -> Option<ProofId> {
    (key % 2 == 1).then(|| ProofId(*blake3::hash(what.as_bytes()).as_bytes()))
}

fn idem(key: u8, what: &str) -> Option<(IdemKey, [u8; 16])> {
    let fp = blake3::hash(what.as_bytes());
    let mut f = [0u8; 16];
    f.copy_from_slice(&fp.as_bytes()[..16]);
    Some((
        IdemKey {
            tree: BlockId([0; 32]),
            key: format!("k{key}"),
        },
        f,
    ))
}

/// An outcome without the store's holder numbering, which may differ
/// between a ledger that re-interns evicted holders and one that does not.
fn project(o: &Outcome) -> String {
    match o {
        Outcome::Done { created, view } => format!(
            "done {created} {:?} {:?} {:?} {:?}",
            view.snapshot, view.holder.chain, view.holder.unit, view.holder.scopes
        ),
        other => format!("{other:?}"),
    }
}

struct Bounded {
    ledger: Ledger,
    store: SqliteStore,
}

impl Bounded {
    fn apply(&mut self, cmd: &Command, now: u64) -> Outcome {
        self.store.begin().expect("begin");
        let mut m = Missing::default();
        self.ledger.missing(cmd, &mut m);
        let i = self.store.idempotency(&m.idem).expect("look-up");
        let r = self.store.reservations(&m.reservations).expect("look-up");
        let next = self
            .ledger
            .supply(m.idem.into_iter().zip(i), m.reservations.into_iter().zip(r));
        let r = self
            .store
            .reservations(&next.reservations)
            .expect("look-up");
        let last = self.ledger.supply([], next.reservations.into_iter().zip(r));
        assert!(last.is_empty(), "reservations need nothing more");
        let out = self.ledger.apply(cmd, now, GRACE);
        self.commit();
        out
    }

    fn commit(&mut self) {
        self.store
            .write(&self.ledger.coalesced_changes())
            .expect("write");
        self.ledger.settle();
    }
}

fn tiny() -> CacheSizes {
    CacheSizes::all(1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn bounded_caches_over_the_store_change_no_answer(steps in prop::collection::vec(step(), 1..120)) {
        let mut reference = Ledger::new(CacheSizes::all(100_000));
        let mut bounded = Bounded {
            ledger: Ledger::new(tiny()),
            store: SqliteStore::in_memory().expect("store"),
        };
        let mut now = 1_000_000u64;
        let mut made: Vec<ResId> = Vec::new();
        let mut sent: Vec<Command> = Vec::new();
        let res = |made: &Vec<ResId>, i: u8| {
            made.get(usize::from(i)).copied().unwrap_or(ResId::new(1, [i; 12]))
        };
        for (n, s) in steps.iter().enumerate() {
            now += 7;
            let what = format!("{s:?}");
            let cmd = match s {
                Step::Reserve { leaf, amount, ttl, spend, key } => {
                    let id = ResId::new(now, [n as u8; 12]);
                    Command {
                        op: Operation::Reserve {
                            req: ReserveRequest {
                                id,
                                chain: chain(*leaf),
                                unit: Unit::Calls,
                                scopes: scopes(*leaf),
                                amount: *amount,
                                ttl_ms: *ttl,
                            },
                            actual: *spend,
                        },
                        idem: idem(*key, &what),
                        proof: proof(*key, &what),
                    }
                }
                Step::Commit { leaf, res: r, actual, key } => Command {
                    op: Operation::Commit { chain: chain(*leaf), id: res(&made, *r), actual: *actual },
                    idem: idem(*key, &what),
                        proof: proof(*key, &what),
                },
                Step::Release { leaf, res: r, key } => Command {
                    op: Operation::Release { chain: chain(*leaf), id: res(&made, *r) },
                    idem: idem(*key, &what),
                        proof: proof(*key, &what),
                },
                Step::Extend { leaf, res: r, ttl, key } => Command {
                    op: Operation::Extend { chain: chain(*leaf), id: res(&made, *r), ttl_ms: *ttl },
                    idem: idem(*key, &what),
                        proof: proof(*key, &what),
                },
                Step::Get { leaf, res: r } => Command {
                    op: Operation::Get { chain: chain(*leaf), id: res(&made, *r) },
                    idem: None,
                    proof: None,
                },
                Step::Replay { key } => Command { op: Operation::Replay, idem: idem(*key, "replay"), proof: None },
                Step::Retry { n } if !sent.is_empty() => sent[usize::from(*n) % sent.len()].clone(),
                Step::Retry { .. } => continue,
                Step::Tick { ms } => {
                    now += ms;
                    let a = reference.expire(now, GRACE);
                    reference.settle();
                    bounded.store.begin().expect("begin");
                    let b = bounded.ledger.expire(now, GRACE);
                    bounded.commit();
                    prop_assert_eq!(a, b);
                    continue;
                }
                Step::Revoke { block } => {
                    let a = reference.revoke(BlockId([0; 32]), BlockId([*block; 32]), now);
                    reference.settle();
                    bounded.store.begin().expect("begin");
                    let b = bounded.ledger.revoke(BlockId([0; 32]), BlockId([*block; 32]), now);
                    bounded.commit();
                    prop_assert_eq!(a, b);
                    continue;
                }
                Step::Restart => {
                    let state = bounded.store.load_active().expect("load");
                    bounded.ledger = Ledger::restore(state, tiny());
                    continue;
                }
            };
            sent.push(cmd.clone());
            let a = reference.apply(&cmd, now, GRACE);
            reference.settle();
            let b = bounded.apply(&cmd, now);
            prop_assert_eq!(project(&a), project(&b), "step {} {:?}", n, s);
            if let (Operation::Reserve { req, .. }, Outcome::Done { created: true, .. }) = (&cmd.op, &a) {
                made.push(req.id);
            }
            prop_assert!(reference.check_invariant().is_ok());
            prop_assert!(bounded.ledger.check_invariant().is_ok());
            let p = bounded.ledger.population();
            prop_assert!(p.idempotency <= 1 && p.finalized <= 1, "{:?}", p);
        }
        // Same counters at the end, scope by scope.
        for leaf in 1..4u8 {
            for s in scopes(leaf) {
                let k = baton::ledger::ScopeKey::of(&s);
                prop_assert_eq!(reference.scope(&k, s.ceiling), bounded.ledger.scope(&k, s.ceiling));
            }
        }
    }
}

/// Allocations and their draws survive a restart from the SQLite store:
/// the restored ledger holds exactly what the old one held, a hold drawn
/// from the allocation gives its money back to it, a release returns
/// exactly the unused part once, and a finalized allocation is read back
/// from the store by id (only active ones are loaded).
#[test]
fn allocations_and_their_draws_survive_a_restart() {
    use baton::ledger::{
        ActiveState, AllocAmount, AllocId, AllocState, AllocateRequest, Overflow, ScopeKey,
    };
    let dir = std::env::temp_dir().join(format!("baton-alloc-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ledger.db");
    let key = |b: u8| ScopeKey {
        block: BlockId([b; 32]),
        unit: Unit::Calls,
        tools: None,
    };
    let aid = AllocId::new(5, [9; 12]);
    let open = || {
        let mut store = SqliteStore::open(&path).expect("open");
        let state: ActiveState = store.load_active().expect("load");
        Bounded {
            ledger: Ledger::restore(state, tiny()),
            store,
        }
    };
    {
        let mut b = open();
        b.store.begin().expect("begin");
        b.ledger
            .allocate(
                &AllocateRequest {
                    id: aid,
                    parent: chain(1),
                    child: chain(2),
                    unit: Unit::Calls,
                    scopes: vec![(key(1), 20), (key(0), 40)],
                    amount: AllocAmount::Fixed(6),
                    child_ceiling: 8,
                    overflow: Overflow::Deny,
                    ttl_ms: 1_000_000,
                    not_after_ms: None,
                },
                1_000,
            )
            .expect("allocate");
        b.commit();
        let reserve = Command {
            op: Operation::Reserve {
                req: ReserveRequest {
                    id: ResId::new(1_000, [1; 12]),
                    chain: chain(2),
                    unit: Unit::Calls,
                    scopes: scopes(2),
                    amount: 4,
                    ttl_ms: 1_000_000,
                },
                actual: None,
            },
            idem: None,
            proof: None,
        };
        assert!(matches!(b.apply(&reserve, 1_000), Outcome::Done { .. }));
        // Killed here: nothing else is written.
    }
    let mut b = open();
    b.ledger.check_invariant().expect("invariant after restart");
    let a = b
        .ledger
        .allocation_for(&chain(2), &Unit::Calls)
        .expect("the allocation is active again")
        .clone();
    assert_eq!((a.amount, a.drawn, a.unused()), (6, 4, 2));
    let parent = b.ledger.scope(&key(1), 20);
    assert_eq!((parent.held, parent.remaining()), (6, 14));
    // The hold ends: its draw goes back to the allocation, not the pool.
    let release = Command {
        op: Operation::Release {
            chain: chain(2),
            id: ResId::new(1_000, [1; 12]),
        },
        idem: None,
        proof: None,
    };
    assert!(matches!(b.apply(&release, 2_000), Outcome::Done { .. }));
    assert_eq!(
        b.ledger
            .allocation_for(&chain(2), &Unit::Calls)
            .map(|a| a.unused()),
        Some(6)
    );
    let released = b.apply(
        &Command {
            op: Operation::ReleaseAllocation {
                chain: chain(1),
                id: aid,
            },
            idem: None,
            proof: None,
        },
        3_000,
    );
    assert!(
        matches!(&released, Outcome::Allocation { alloc, .. } if alloc.returned == 6),
        "{released:?}"
    );
    assert_eq!(b.ledger.scope(&key(1), 20).remaining(), 20);
    drop(b);
    let mut b = open();
    assert_eq!(
        b.ledger.population().allocations,
        0,
        "only active ones load"
    );
    assert_eq!(b.ledger.scope(&key(1), 20).remaining(), 20);
    let get = Command {
        op: Operation::GetAllocation {
            chain: chain(2),
            id: aid,
        },
        idem: None,
        proof: None,
    };
    let mut m = Missing::default();
    b.ledger.missing(&get, &mut m);
    assert_eq!(m.allocations, vec![aid]);
    b.store.begin().expect("begin");
    let found = b.store.allocations(&m.allocations).expect("look-up");
    b.ledger
        .supply_allocations(m.allocations.into_iter().zip(found));
    let got = b.ledger.apply(&get, 4_000, GRACE);
    assert!(
        matches!(&got, Outcome::Allocation { alloc, .. } if alloc.state == AllocState::Released && alloc.returned == 6),
        "{got:?}"
    );
    b.commit();
    let _ = std::fs::remove_dir_all(&dir);
}
