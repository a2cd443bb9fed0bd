//! The fuzz targets' seeds (`xtask/fuzz/seeds/<target>/`), replayed
//! through the same entry points `cargo xtask fuzz` fuzzes, with a few
//! hundred deterministic mutations of each: the invariants hold on every
//! machine without a nightly, and each target is known to run.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use support::{stdout_of, workspace_root, xtask};

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Every fuzz target, by the name of its binary in `xtask/fuzz/Cargo.toml`.
const TARGETS: &[(&str, Entry)] = &[
    ("manifest", xtask_lib::fuzz::manifest),
    ("sums", xtask_lib::fuzz::sums),
    ("signatures", xtask_lib::fuzz::signatures),
    ("release_tar", xtask_lib::fuzz::release_tar),
    ("image_index", xtask_lib::fuzz::image_index),
    ("provenance", xtask_lib::fuzz::provenance),
    ("debian", xtask_lib::fuzz::debian),
    ("traceparent", platform::fuzz::traceparent),
    ("config", platform::fuzz::config),
];

/// Mutations per seed.
const MUTATIONS: usize = 300;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The targets as `cargo xtask fuzz` runs them (from `xtask/fuzz/Cargo.toml`)
/// each have an entry point here, a target file that calls it, and seeds.
#[test]
fn every_fuzz_target_has_an_entry_point_and_seeds() {
    let listed = stdout_of(xtask(&workspace_root()).args(["fuzz", "--list"]));
    let declared: BTreeSet<&str> = listed.lines().collect();
    let tested: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(declared, tested, "xtask/fuzz/Cargo.toml and TARGETS differ");
    for name in tested {
        let target =
            fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            target.contains(&format!("::fuzz::{name}(data)")),
            "{name}: {target}"
        );
        assert!(!seeds(name).is_empty(), "{name} has no seeds");
    }
}

#[test]
fn the_seeds_and_their_mutations_keep_every_invariant() {
    for (name, entry) in TARGETS {
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for seed in seeds(name) {
            let bytes = fs::read(&seed).unwrap();
            entry(&bytes);
            for _ in 0..MUTATIONS {
                let mutated = random.mutate(&bytes);
                let outcome = std::panic::catch_unwind(|| entry(&mutated));
                if outcome.is_err() {
                    panic!(
                        "{name}: a mutation of {} broke an invariant; the input: {:?}",
                        seed.display(),
                        String::from_utf8_lossy(&mutated)
                    );
                }
            }
        }
    }
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let mut seeds: Vec<PathBuf> = fs::read_dir(fuzz_dir().join("seeds").join(target))
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    seeds.sort();
    seeds
}

/// A small deterministic generator: the same mutations on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    /// One to four edits: a byte changed, inserted or removed, a cut, or a
    /// piece repeated, with bytes a parser cares about favoured.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\0/.-=\"\\{}[]:,\n 0fF\xff";
        let mut bytes = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(bytes.len() + 1);
            let byte = if self.next().is_multiple_of(2) {
                INTERESTING[self.below(INTERESTING.len())]
            } else {
                self.next() as u8
            };
            match self.below(5) {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                3 => bytes.truncate(at),
                _ => {
                    let end = (at + 1 + self.below(16)).min(bytes.len());
                    let piece = bytes[at.min(end)..end].to_vec();
                    let to = self.below(bytes.len() + 1);
                    bytes.splice(to..to, piece);
                }
            }
        }
        bytes
    }
}
