use super::*;

/// splitmix64: a bijection, so distinct counters give distinct values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A fingerprint per counter, spread like a keyed hash: distinct
/// counters differ in the stored top 64 bits.
fn one(n: u64) -> u128 {
    u128::from(mix(n)) << 64 | u128::from(mix(!n))
}

fn fp(p: u64, s: u64) -> Fingerprints {
    Fingerprints {
        pair: one(p),
        signature: one(s),
    }
}

/// Every table: `len` counts its occupied slots, the load is within
/// bounds, and each key is found, once, from its home slot.
fn check_tables(g: &MemoryReplayGuard) {
    for i in 0..SHARDS {
        let s = g.lock(i);
        let t = &s.table;
        // The prefetch's view of the shard is its table.
        let h = &g.hints[i];
        assert_eq!(h.cap.load(Ordering::Relaxed), t.cap());
        if t.cap() > 0 {
            assert_eq!(h.keys.load(Ordering::Relaxed), t.keys.as_ptr() as usize);
            assert_eq!(h.until.load(Ordering::Relaxed), t.until.as_ptr() as usize);
        }
        assert_eq!(t.len, t.keys.iter().filter(|&&k| k != 0).count());
        assert!(t.len <= max_load(t.cap()), "{} in {}", t.len, t.cap());
        for (j, &k) in t.keys.iter().enumerate() {
            if k != 0 {
                let at = t.lookup(k, 0);
                assert!(at.slot == Some(j) && !at.empty, "key {k:#x}");
            }
        }
    }
}

#[test]
fn either_fingerprint_held_is_a_replay() {
    let g = MemoryReplayGuard::new(1000);
    assert_eq!(g.claim(&fp(1, 2), 100, 10), Ok(()));
    assert_eq!(g.claim(&fp(1, 3), 100, 10), Err(ReplayError::Reused));
    assert_eq!(g.claim(&fp(4, 2), 100, 10), Err(ReplayError::Reused));
    assert_eq!(g.claim(&fp(4, 5), 100, 10), Ok(()));
}

#[test]
fn held_through_the_last_second_then_free() {
    let g = MemoryReplayGuard::new(1000);
    g.claim(&fp(1, 2), 100, 10).unwrap();
    assert_eq!(g.claim(&fp(1, 9), 200, 100), Err(ReplayError::Reused));
    assert_eq!(g.claim(&fp(1, 9), 200, 101), Ok(()));
}

#[test]
fn full_guard_fails_closed_and_never_forgets() {
    let g = MemoryReplayGuard::new(SHARDS * 2);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..2000u64 {
        match g.claim(&fp(i * 2 + 1, i * 2 + 2), 1_000, 10) {
            Ok(()) => accepted.push(i),
            Err(ReplayError::Unavailable) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused > 0);
    assert!(!accepted.is_empty());
    for i in accepted {
        assert_eq!(
            g.claim(&fp(i * 2 + 1, 7_777_777), 1_000, 11),
            Err(ReplayError::Reused)
        );
    }
    // Once the window has passed, room comes back.
    assert_eq!(g.claim(&fp(99_999, 99_998), 3_000, 1_001), Ok(()));
    check_tables(&g);
}

#[test]
fn expired_entries_are_swept_before_growth() {
    let g = MemoryReplayGuard::new(1 << 20);
    for sec in 0..50u64 {
        for i in 0..200u64 {
            let n = sec * 1000 + i;
            g.claim(&fp(2 * n + 1, 2 * n + 2), sec + 2, sec).unwrap();
        }
    }
    // 3 seconds of traffic are live at most; far fewer than 50 s worth.
    assert!(g.len() < 200 * 2 * 10, "{}", g.len());
}

/// Mixed lifetimes, a ramp up (growth) then many short-lived claims
/// (sweeps and shrinking): every claim still live is refused, by either
/// fingerprint alone, at every check.
#[test]
fn never_evicts_live_under_churn() {
    let g = MemoryReplayGuard::new(1 << 22);
    let mut live: Vec<(u64, u64)> = Vec::new();
    let (mut next, mut other) = (0u64, u64::MAX);
    let (mut peak, mut shrunk) = (0, false);
    for sec in 0..100u64 {
        let now = 1_000_000 + sec;
        let (count, longest) = if sec < 40 { (40 * sec, 60) } else { (2000, 3) };
        for _ in 0..count {
            let until = now + mix(next) % longest;
            assert_eq!(g.claim(&fp(2 * next, 2 * next + 1), until, now), Ok(()));
            live.push((next, until));
            next += 1;
        }
        let bytes = g.memory_bytes();
        shrunk |= bytes < peak / 4;
        peak = peak.max(bytes);
        live.retain(|&(_, until)| until >= now);
        if sec % 5 == 4 {
            check_tables(&g);
            for &(n, _) in &live {
                other -= 1;
                let alone = if n % 2 == 0 {
                    fp(2 * n, other)
                } else {
                    fp(other, 2 * n + 1)
                };
                assert_eq!(g.claim(&alone, now + 60, now), Err(ReplayError::Reused));
            }
        }
    }
    assert!(peak > 500_000, "{peak}");
    assert!(shrunk, "peak {peak}, now {}", g.memory_bytes());
}

/// Growth keeps the tables at least half full: at most 24 bytes per
/// fingerprint (48 per request) beyond the fixed shard array, from 1 k
/// to 1 M fingerprints, and within 24 bytes overall from 100 k.
#[test]
fn growth_keeps_24_bytes_per_fingerprint() {
    let g = MemoryReplayGuard::new(1 << 22);
    let fixed = g.memory_bytes();
    for i in 0..500_000u64 {
        g.claim(&fp(2 * i, 2 * i + 1), 10_000, 10).unwrap();
        let n = 2 * (i as usize + 1);
        if n >= 1_000 && n.is_multiple_of(1_000) {
            let bytes = g.memory_bytes();
            assert_eq!(g.len(), n);
            assert!(bytes - fixed <= 24 * n, "{bytes} bytes for {n}");
            assert!(n < 100_000 || bytes <= 24 * n, "{bytes} bytes for {n}");
        }
    }
    check_tables(&g);
}

#[test]
fn probe_wraps_around_the_end() {
    let mut t = Table::with_capacity(8);
    let k = |i: u64| u64::MAX - i;
    assert!((0..3).all(|i| home(k(i), 8) == 7));
    for i in 0..3 {
        assert!(t.insert(k(i), 20, 10));
    }
    assert_eq!((t.keys[7], t.keys[0], t.keys[1]), (k(0), k(1), k(2)));
    assert!((0..3).all(|i| t.lookup(k(i), 20).live));
    // A key at home in slot 0 probes past the wrapped ones.
    let at = t.lookup(1, 10);
    assert!(at.slot == Some(2) && at.empty && !at.live);
    assert!(t.put(at, 1, 20));
    assert_eq!((t.keys[2], t.len), (1, 4));
    // Once they expire, the first expired slot of the chain is reused,
    // and the chain through it stays whole.
    assert!(t.insert(k(3), 40, 30));
    assert_eq!((t.keys[7], t.len), (k(3), 4));
    assert!(t.lookup(k(3), 30).live && !t.lookup(k(1), 30).live);
    assert_eq!(t.lookup(k(1), 30).slot, Some(0));
    // Through the guard: one shard (low bits 0), keys at the very end.
    let g = MemoryReplayGuard::new(1 << 10);
    let at_end = |i: u64| Fingerprints {
        pair: u128::from(k(2 * i)) << 64,
        signature: u128::from(k(2 * i + 1)) << 64,
    };
    for i in 0..8 {
        assert_eq!(g.claim(&at_end(i), 100, 10), Ok(()));
    }
    for i in 0..8 {
        assert_eq!(g.claim(&at_end(i), 100, 11), Err(ReplayError::Reused));
    }
    let s = g.lock(0);
    assert_eq!(s.table.len, 16);
    assert!(s.table.keys[0] != 0 && s.table.keys[s.table.cap() - 1] != 0);
    drop(s);
    check_tables(&g);
}

#[test]
fn fingerprint_zero_is_stored() {
    let g = MemoryReplayGuard::new(1 << 16);
    let zero = Fingerprints {
        pair: 0,
        signature: one(1),
    };
    assert_eq!(g.claim(&zero, 100, 10), Ok(()));
    assert_eq!(g.len(), 2);
    let again = Fingerprints {
        pair: 0,
        signature: one(2),
    };
    assert_eq!(g.claim(&again, 100, 10), Err(ReplayError::Reused));
    // Stored as 1: the one value it shares its stored bits with.
    let one_top = Fingerprints {
        pair: 1 << 64,
        signature: one(3),
    };
    assert_eq!(g.claim(&one_top, 100, 10), Err(ReplayError::Reused));
    // Still held after its shard's table grows several times.
    for i in 0..200u64 {
        let f = Fingerprints {
            pair: u128::from(mix(i)) << 64,
            signature: u128::from(mix(i + 1000)) << 64,
        };
        assert_eq!(g.claim(&f, 100, 10), Ok(()));
    }
    assert!(g.lock(0).table.cap() > 200);
    assert_eq!(g.claim(&again, 100, 11), Err(ReplayError::Reused));
    // Free once expired.
    assert_eq!(g.claim(&again, 200, 101), Ok(()));
    check_tables(&g);
}

#[test]
fn fingerprints_separate_fields() {
    let k = FingerprintKey::new([7; 16]);
    let sig =
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";
    let a = format!("ARMOR-PSK ab:{sig}:c:1");
    let b = format!("ARMOR-PSK a:{sig}:bc:1");
    let fa = k.fingerprints(&Credentials::parse(&a).unwrap());
    let fb = k.fingerprints(&Credentials::parse(&b).unwrap());
    assert_ne!(fa.pair, fb.pair);
    assert_eq!(fa.signature, fb.signature);
}

#[test]
fn prefetch_is_only_a_hint() {
    // It takes no lock (holding a shard's lock here does not block it) and
    // changes nothing: the claims that follow answer as without it.
    let g = MemoryReplayGuard::new(1000);
    g.prefetch(&fp(1, 2));
    assert!(g.is_empty());
    assert_eq!(g.claim(&fp(1, 2), 100, 10), Ok(()));
    let held = g.lock(MemoryReplayGuard::shard_of(one(1)));
    assert!(g.home_lines(one(1)).is_some());
    g.prefetch(&fp(1, 2));
    g.prefetch(&fp(1, 3));
    drop(held);
    for i in 3..200 {
        g.prefetch(&fp(1, i));
        g.prefetch(&fp(i, i + 1000));
    }
    assert_eq!(g.len(), 2);
    check_tables(&g);
    assert_eq!(g.claim(&fp(1, 3), 100, 10), Err(ReplayError::Reused));
    assert_eq!(g.claim(&fp(7, 8), 100, 10), Ok(()));
    assert_eq!(g.len(), 4);
    check_tables(&g);
    // A sweep that empties the tables publishes them too.
    g.sweep(101);
    assert!(g.is_empty());
    check_tables(&g);
    g.prefetch(&fp(1, 2));
    assert_eq!(g.claim(&fp(1, 2), 200, 101), Ok(()));
}

#[test]
fn prefetch_aims_at_the_home_slot_of_each_fingerprint() {
    let g = MemoryReplayGuard::new(1 << 16);
    assert_eq!(g.home_lines(one(1)), None);
    for i in 0..500 {
        g.claim(&fp(2 * i, 2 * i + 1), 100, 10).unwrap();
    }
    for n in 0..2000u64 {
        let f = one(n);
        let s = g.lock(MemoryReplayGuard::shard_of(f));
        let t = &s.table;
        assert!(t.cap() > 0);
        let i = home(slot_key(f), t.cap());
        let want = [
            std::ptr::from_ref(&t.keys[i]) as usize,
            std::ptr::from_ref(&t.until[i]) as usize,
        ];
        drop(s);
        assert_eq!(g.home_lines(f), Some(want), "fingerprint {n}");
    }
}
