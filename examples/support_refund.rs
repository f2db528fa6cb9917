//! The support-refund delegation chain, hop by hop.
//!
//! The issuer mints a tenant token for `acme-support`. An orchestrator
//! narrows it to $50 and three tool families, hands a $5 refund agent the
//! CRM read and refund tools for one customer, and the refund agent hands a
//! $2 lookup agent read access only. Each hop appends a signed block offline;
//! a gateway then checks the whole chain with the issuer's public key alone.
//!
//! At the end, the spend ledger's rules (`baton::ledger`, the same code
//! `baton serve` runs behind `POST /v1/allocations`) show the orchestrator
//! carving a guaranteed $5 for the refund agent at delegation time, so a
//! greedy sibling cannot starve it, and releasing the unused part when the
//! refund agent is done.
//!
//! Run with `cargo run --example support_refund --features forge`. Keys, ephemeral seeds and
//! the clock are fixed so that the output (block ids, sizes) is reproducible;
//! real code uses [`RootKey::generate`], [`Token::mint`] and
//! [`UnverifiedToken::attenuate`], which draw from the operating system.
//! `tests/scenario.rs` includes this file and asserts the final token's size.

use std::error::Error;

use baton::ledger::{
    AllocAmount, AllocId, AllocateRequest, Ledger, LedgerError, Overflow, ResId, ReserveRequest,
    ScopeKey,
};
use baton::pattern::ActionPattern;
use baton::{
    ArgBound, ArgConstraint, ArgValue, Authority, Caveat, Keyset, Request, RootKey, Token, Unit,
    UnverifiedToken, Verifier,
};

/// One US dollar in `usd_microcents` (millionths of a cent).
pub const USD: u64 = 100_000_000;
/// When the tenant token is issued (Unix seconds, 2027-01-15).
pub const ISSUED_AT: u64 = 1_800_000_000;
/// When the gateway sees the requests: ten minutes into the orchestrator's hour.
pub const NOW: u64 = ISSUED_AT + 600;
/// The ticket's customer, the only resource the refund agent may touch.
pub const CUSTOMER: &str = "customer:4821";

/// The issuer's root key. Fixed for reproducibility; generate it in real life.
pub const ROOT_SEED: [u8; 32] = [0x42; 32];
/// Ephemeral seeds of blocks 0 to 3, one per hop, never reused.
pub const HOP_SEEDS: [[u8; 32]; 4] = [[0xa0; 32], [0xa1; 32], [0xa2; 32], [0xa3; 32]];

/// Every token of the chain, from the issuer's to the lookup agent's.
pub struct Chain {
    /// The issuer's key; the gateway only ever sees its public half.
    pub root: RootKey,
    /// Block 0: the tenant token.
    pub tenant: Token,
    /// Blocks 0–1.
    pub orchestrator: UnverifiedToken,
    /// Blocks 0–2.
    pub refund_agent: UnverifiedToken,
    /// Blocks 0–3: the scenario's four-block token.
    pub lookup_agent: UnverifiedToken,
}

/// Block 0, declared by the issuer: everything the tenant may ever do.
pub fn tenant_caveats() -> Result<Vec<Caveat>, Box<dyn Error>> {
    Ok(vec![
        Caveat::budget(Unit::UsdMicrocents, 500 * USD),
        Caveat::tools(["*"])?,
        Caveat::Label("acme-support".into()),
    ])
}

/// Block 1, appended by the orchestrator: $50, three tool families, an hour.
pub fn orchestrator_caveats() -> Result<Vec<Caveat>, Box<dyn Error>> {
    Ok(vec![
        Caveat::budget(Unit::UsdMicrocents, 50 * USD),
        Caveat::tools(["crm.*", "refund.*", "email.*"])?,
        Caveat::Depth(3),
        Caveat::Expiry {
            not_after: ISSUED_AT + 3600,
            not_before: None,
        },
        Caveat::Label("orchestrator".into()),
    ])
}

/// Block 2, appended by the orchestrator for the refund agent: $5, read the
/// CRM and issue refunds of at most $100, for this ticket's customer only.
pub fn refund_agent_caveats() -> Result<Vec<Caveat>, Box<dyn Error>> {
    let max_refund = i64::try_from(100 * USD)?;
    Ok(vec![
        Caveat::budget(Unit::UsdMicrocents, 5 * USD),
        Caveat::tools(["crm.read", "refund.issue"])?,
        Caveat::ArgBound(ArgConstraint::new(
            ActionPattern::parse("refund.issue")?,
            "amount",
            ArgBound::Range {
                min: Some(0),
                max: Some(max_refund),
            },
        )),
        Caveat::resources([CUSTOMER])?,
        Caveat::Depth(1),
        Caveat::Label("refund".into()),
    ])
}

/// Block 3, appended by the refund agent for the lookup agent: $2, read the
/// CRM, no further delegation. `tools` is what the lookup agent asked for.
pub fn lookup_agent_caveats(tools: &str) -> Result<Vec<Caveat>, Box<dyn Error>> {
    Ok(vec![
        Caveat::budget(Unit::UsdMicrocents, 2 * USD),
        Caveat::tools([tools])?,
        Caveat::Depth(0),
        Caveat::Label("lookup".into()),
    ])
}

/// Builds the whole chain. Each holder receives its parent as text, parses
/// it without any key, and appends its block.
pub fn build_chain() -> Result<Chain, Box<dyn Error>> {
    let root = RootKey::from_seed(&ROOT_SEED);
    let tenant = Token::mint_with_seed(&root, tenant_caveats()?, &HOP_SEEDS[0])?;
    let orchestrator = UnverifiedToken::from_text(&tenant.to_text())?
        .attenuate_with_seed(orchestrator_caveats()?, &HOP_SEEDS[1])?;
    let refund_agent = UnverifiedToken::from_text(&orchestrator.to_text())?
        .attenuate_with_seed(refund_agent_caveats()?, &HOP_SEEDS[2])?;
    let lookup_agent = UnverifiedToken::from_text(&refund_agent.to_text())?
        .attenuate_with_seed(lookup_agent_caveats("crm.read")?, &HOP_SEEDS[3])?;
    Ok(Chain {
        root,
        tenant,
        orchestrator,
        refund_agent,
        lookup_agent,
    })
}

/// `$12.34` for an amount in usd_microcents.
pub fn dollars(microcents: u64) -> String {
    let cents = microcents / (USD / 100);
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn amount(usd: u64) -> Result<ArgValue, Box<dyn Error>> {
    Ok(ArgValue::Int(i64::try_from(usd * USD)?))
}

/// Prints what a holder of `token` may do: the fold of every block so far.
fn show(hop: &str, authority: &Authority, blocks: usize, bytes: usize) {
    println!("== {hop}: {blocks} block(s), {bytes} bytes");
    let list = |v: Vec<&str>| v.join(", ");
    match authority.tools() {
        Some(t) => println!(
            "   tools:     {}",
            list(t.iter().map(|p| p.as_str()).collect())
        ),
        None => println!("   tools:     (none: no action allowed)"),
    }
    match authority.resources() {
        Some(r) => println!(
            "   resources: {}",
            list(r.iter().map(|p| p.as_str()).collect())
        ),
        None => println!("   resources: any"),
    }
    for (unit, filter, ceiling) in authority.effective_budgets() {
        let scope = filter.map_or_else(|| "all tools".to_owned(), |p| p.to_string());
        let shown = match unit {
            Unit::UsdMicrocents => format!("{} ({ceiling} usd_microcents)", dollars(ceiling)),
            other => format!("{ceiling} {other}"),
        };
        println!("   budget:    {shown}, {scope}");
    }
    match authority.remaining_depth() {
        Some(d) => println!("   depth:     {d} more block(s)"),
        None => println!("   depth:     unlimited"),
    }
    if let Some(t) = authority.not_after() {
        println!("   expires:   {t} ({}s after issue)", t - ISSUED_AT);
    }
    for (block, c) in authority.arg_bounds() {
        println!(
            "   arg bound: {} {} {} (block {block})",
            c.action, c.arg, c.bound
        );
    }
    if let Some((_, label)) = authority.labels().last() {
        println!("   label:     {label}");
    }
}

/// Plays the scenario. Returns an error (rather than panicking) if any step
/// the scenario relies on fails.
pub fn main() -> Result<(), Box<dyn Error>> {
    let chain = build_chain()?;
    show(
        "block 0, issuer -> tenant acme-support",
        chain.tenant.authority(),
        chain.tenant.len(),
        chain.tenant.to_bytes().len(),
    );
    for (hop, token) in [
        ("block 1, tenant -> orchestrator", &chain.orchestrator),
        ("block 2, orchestrator -> refund agent", &chain.refund_agent),
    ] {
        show(hop, token.authority(), token.len(), token.to_bytes().len());
    }

    // The lookup agent asks for all of crm.*; the refund agent only holds
    // crm.read, so attenuation refuses before anything is signed.
    let too_wide = chain
        .refund_agent
        .attenuate_with_seed(lookup_agent_caveats("crm.*")?, &HOP_SEEDS[3])
        .expect_err("the refund agent holds only crm.read, so crm.* must widen");
    println!(
        "-- lookup agent asks for crm.*: refused, {}",
        too_wide.code()
    );
    assert_eq!(too_wide.code(), "widening_tools");

    let lookup = &chain.lookup_agent;
    show(
        "block 3, refund agent -> lookup agent (crm.read)",
        lookup.authority(),
        lookup.len(),
        lookup.to_bytes().len(),
    );
    println!(
        "   text form: {} characters",
        chain.lookup_agent.to_text().len()
    );

    // The gateway holds the issuer's public key and nothing else.
    let gateway = Verifier::new(Keyset::new().with(chain.root.public()));
    let refund_agent = gateway.verify_text(&chain.refund_agent.to_text())?;
    println!("== gateway, refund agent's token verified");

    let email = Request::new("email.send", NOW)?;
    let denied = gateway
        .authorize(&refund_agent, &email)
        .expect_err("block 2 drops email.*, so email.send must be denied");
    println!("   email.send:                 denied, {}", denied.code());
    assert_eq!(denied.code(), "action_not_allowed");

    let refund = |usd| -> Result<Request, Box<dyn Error>> {
        Ok(Request::new("refund.issue", NOW)?
            .resource(CUSTOMER)?
            .arg("amount", amount(usd)?)?)
    };
    let denied = gateway
        .authorize(&refund_agent, &refund(150)?)
        .expect_err("block 2 bounds refund amounts at $100, so $150 must be denied");
    println!(
        "   refund.issue $150 on {CUSTOMER}: denied, {}",
        denied.code()
    );
    assert_eq!(denied.code(), "arg_out_of_bounds");

    let allowed = gateway.authorize(&refund_agent, &refund(40)?)?;
    println!("   refund.issue $40 on {CUSTOMER}: allowed; the spend debits, nearest first:");
    for scope in &allowed.budgets {
        println!(
            "     block {} ({}...): {} {}",
            scope.block,
            &scope.block_id.to_string()[..16],
            dollars(scope.ceiling),
            scope.unit,
        );
    }

    let lookup_agent = gateway.verify_text(&chain.lookup_agent.to_text())?;
    println!("== gateway, lookup agent's token verified");
    let read = Request::new("crm.read", NOW)?.resource(CUSTOMER)?;
    gateway.authorize(&lookup_agent, &read)?;
    println!("   crm.read on {CUSTOMER}:        allowed");
    let denied = gateway
        .authorize(&lookup_agent, &refund(40)?)
        .expect_err("block 3 keeps only crm.read, so a refund must be denied");
    println!("   refund.issue $40:           denied, {}", denied.code());

    let exhausted = chain
        .lookup_agent
        .attenuate(vec![Caveat::Label("sub-agent".into())])
        .expect_err("block 3 sets depth 0, so no block may follow");
    println!(
        "-- lookup agent delegates further: refused, {}",
        exhausted.code()
    );
    assert_eq!(exhausted.code(), "depth_exceeded");

    guaranteed_sub_budget(&chain, &gateway)
}

/// The orchestrator sets $5 aside for the refund agent when it delegates,
/// a greedy sibling agent spends what is left of the $50, the refund agent
/// still gets its money, and the orchestrator releases the unused part
/// when the refund agent finishes. In production these are
/// `POST /v1/allocations`, `/v1/spend` and
/// `POST /v1/allocations/{id}/release` (`baton ledger allocate`,
/// `baton ledger release-allocation`); here the ledger's rules run in
/// memory.
fn guaranteed_sub_budget(chain: &Chain, gateway: &Verifier) -> Result<(), Box<dyn Error>> {
    let now_ms = NOW * 1000;
    let mut ledger = Ledger::default();
    let orchestrator = gateway.verify_text(&chain.orchestrator.to_text())?;
    let refund_agent = gateway.verify_text(&chain.refund_agent.to_text())?;
    let ids = refund_agent.block_ids();
    // Held above the refund agent: every unfiltered usd budget of blocks
    // 0-1, nearest first (`budgets()` lists them root first).
    let scopes: Vec<(ScopeKey, u64)> = refund_agent
        .authority()
        .budgets()
        .iter()
        .rev()
        .filter(|(b, bud)| {
            *b + 1 < ids.len() && bud.unit == Unit::UsdMicrocents && bud.tools.is_none()
        })
        .map(|(b, bud)| {
            let key = ScopeKey {
                block: ids[*b],
                unit: Unit::UsdMicrocents,
                tools: None,
            };
            (key, bud.ceiling)
        })
        .collect();
    let carved = ledger.allocate(
        &AllocateRequest {
            id: AllocId::new(now_ms, [1; 12]),
            parent: orchestrator.block_ids().to_vec(),
            child: ids.to_vec(),
            unit: Unit::UsdMicrocents,
            scopes,
            amount: AllocAmount::Fixed(5 * USD),
            child_ceiling: 5 * USD,
            overflow: Overflow::Deny,
            ttl_ms: 3_600_000,
            not_after_ms: refund_agent.authority().not_after().map(|s| s * 1000),
        },
        now_ms,
    )?;
    println!(
        "== ledger, orchestrator carves {} for the refund agent ({})",
        dollars(carved.amount),
        carved.id
    );
    let orchestrator_scope = ScopeKey {
        block: ids[1],
        unit: Unit::UsdMicrocents,
        tools: None,
    };
    let left = |l: &Ledger| l.scope(&orchestrator_scope, 50 * USD).remaining();
    println!(
        "   orchestrator's $50: {} left for everyone else",
        dollars(left(&ledger))
    );

    // A greedy sibling agent with its own $50 cap tries to take it all.
    let sibling = chain.orchestrator.attenuate_with_seed(
        vec![
            Caveat::budget(Unit::UsdMicrocents, 50 * USD),
            Caveat::tools(["crm.read"])?,
        ],
        &[0xb0; 32],
    )?;
    let sibling = gateway.verify_text(&sibling.to_text())?;
    let spend = |l: &mut Ledger, n: u8, token: &Token, action: Request, amount: u64| {
        let budgets = gateway.authorize(token, &action).map(|a| a.budgets);
        budgets
            .map_err(|e| Box::new(e) as Box<dyn Error>)
            .and_then(|scopes| {
                let req = ReserveRequest {
                    id: ResId::new(now_ms, [n; 12]),
                    chain: token.block_ids().to_vec(),
                    unit: Unit::UsdMicrocents,
                    scopes,
                    amount,
                    ttl_ms: 60_000,
                };
                let r = l.reserve(&req, now_ms)?;
                Ok(l.commit(token.block_ids(), &r.id, amount, now_ms, 0)?)
            })
    };
    let read = Request::new("crm.read", NOW)?;
    let greedy = spend(&mut ledger, 2, &sibling, read.clone(), 48 * USD);
    println!(
        "   sibling spends $48: refused ({})",
        greedy.err().map_or("?".into(), |e| e.to_string())
    );
    spend(&mut ledger, 3, &sibling, read, 45 * USD)?;
    println!(
        "   sibling spends $45: ok; orchestrator's pool: {} left",
        dollars(left(&ledger))
    );

    // The refund agent's $2.50 lookup-and-refund fee comes from its allocation.
    let fee = Request::new("refund.issue", NOW)?
        .resource(CUSTOMER)?
        .arg("amount", amount(40)?)?;
    spend(&mut ledger, 4, &refund_agent, fee.clone(), 250 * USD / 100)?;
    println!("   refund agent spends $2.50: ok, from its allocation");
    // Past its $5 the allocation says no (overflow: deny), naming itself.
    let over = spend(&mut ledger, 5, &refund_agent, fee, 3 * USD);
    let refused = over.err().and_then(|e| e.downcast::<LedgerError>().ok());
    assert!(matches!(
        refused.as_deref(),
        Some(LedgerError::AllocationExhausted { .. })
    ));
    println!("   refund agent asks for $3 more: refused, allocation_exhausted");

    // Done: the orchestrator releases the unused part, exactly once.
    let released = ledger.release_allocation(orchestrator.block_ids(), &carved.id, now_ms)?;
    println!(
        "== refund agent done: orchestrator releases {}, its pool has {} again",
        dollars(released.returned),
        dollars(left(&ledger))
    );
    assert_eq!(released.returned, 250 * USD / 100);
    assert_eq!(left(&ledger), 250 * USD / 100);
    ledger
        .check_invariant()
        .map_err(|k| format!("invariant broken at {k}"))?;
    Ok(())
}
