//! Writes the seed corpus of `parse_verify` from fixed seeds:
//! `cargo run --bin gen_corpus` (from `fuzz/`). The output is deterministic,
//! so re-running it leaves the checked-in files unchanged.

use std::path::Path;

use baton::pattern::ActionPattern;
use baton::{ArgBound, ArgConstraint, Budget, Caveat, HolderKey, RootKey, Token, Unit};

/// Must match `ROOT_SEED` in `fuzz_targets/parse_verify.rs`.
const ROOT_SEED: [u8; 32] = [0x42; 32];

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/parse_verify".to_owned());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let root = RootKey::from_seed(&ROOT_SEED);

    let minimal = Token::mint_with_seed(&root, vec![Caveat::tools(["*"])?], &seed(1))?;

    let full = Token::mint_with_seed(
        &root,
        vec![
            Caveat::budget(Unit::UsdMicrocents, 5_000_000_000),
            Caveat::Budget(Budget::new(
                Unit::Calls,
                100,
                Some(ActionPattern::parse("crm.*")?),
            )),
            Caveat::tools(["crm.*", "refund.*", "email.send"])?,
            Caveat::Depth(4),
            Caveat::Expiry {
                not_after: 1_900_000_000,
                not_before: Some(1_700_000_000),
            },
            Caveat::resources(["customer:*", "order:*"])?,
            Caveat::ArgBound(ArgConstraint::new(
                ActionPattern::parse("refund.*")?,
                "amount",
                ArgBound::Range {
                    min: Some(0),
                    max: Some(10_000),
                },
            )),
            Caveat::ArgBound(ArgConstraint::new(
                ActionPattern::parse("*")?,
                "currency",
                ArgBound::OneOf(["eur".to_owned(), "usd".to_owned()].into()),
            )),
            Caveat::Label("orchestrator".into()),
        ],
        &seed(2),
    )?;
    let child = full.attenuate_with_seed(
        vec![
            Caveat::budget(Unit::UsdMicrocents, 500_000_000),
            Caveat::tools(["crm.read", "refund.issue"])?,
            Caveat::resources(["customer:4821"])?,
            Caveat::ArgBound(ArgConstraint::new(
                ActionPattern::parse("refund.issue")?,
                "amount",
                ArgBound::Range {
                    min: Some(1),
                    max: Some(500),
                },
            )),
            Caveat::Label("refund-agent".into()),
        ],
        &seed(3),
    )?;
    let grandchild = child.attenuate_with_seed(
        vec![
            Caveat::Depth(1),
            Caveat::Expiry {
                not_after: 1_850_000_000,
                not_before: None,
            },
        ],
        &seed(4),
    )?;
    let sealed = grandchild.seal()?;
    let mut long = minimal.clone();
    for i in 0..6 {
        long = long.attenuate_with_seed(vec![], &seed(10 + i))?;
    }
    // Rejected on purpose: a block that widens the budget, correctly signed.
    let widening = baton::forge::append_unchecked(
        child.to_bytes(),
        &[Caveat::budget(Unit::UsdMicrocents, 600_000_000)],
        &seed(5),
    )
    .map_err(|e| e.to_string())?;

    // Holder-bound: the refund agent's child bound to a holder key, and the
    // holder narrowing it again with its own key (blocks with caveat 7).
    let holder = HolderKey::from_seed(&seed(20));
    let bound = child.attenuate_with_seed(vec![Caveat::Holder(holder.public())], &seed(21))?;
    let bound_again = bound.attenuate_as_holder(
        &holder,
        vec![Caveat::Depth(0), Caveat::Holder(holder.public())],
    )?;
    let files: [(&str, Vec<u8>); 10] = [
        ("seed_bound", bound.to_bytes().to_vec()),
        ("seed_bound_narrowed", bound_again.to_bytes().to_vec()),
        ("seed_minimal", minimal.to_bytes().to_vec()),
        ("seed_full_root", full.to_bytes().to_vec()),
        ("seed_child", child.to_bytes().to_vec()),
        ("seed_grandchild", grandchild.to_bytes().to_vec()),
        ("seed_sealed", sealed.to_bytes().to_vec()),
        ("seed_seven_blocks", long.to_bytes().to_vec()),
        ("seed_widening_budget", widening),
        ("seed_text_grandchild", grandchild.to_text().into_bytes()),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
