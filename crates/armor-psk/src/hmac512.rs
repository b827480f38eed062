//! HMAC-SHA512 (RFC 2104) from two precomputed SHA-512 midstates.
//!
//! Keying HMAC means compressing one block of `key ⊕ ipad` and one of
//! `key ⊕ opad`. What is left of each is a 64-byte SHA-512 state, so a key
//! is 128 bytes in all, two cache lines: a signature starts from a copy of
//! the inner state and ends with one compression from the outer state.
//! (The `hmac` crate's keyed state is about 300 bytes, with its buffer.)
//! Every verification thus reads the same small, aligned amount of key
//! memory, whichever key it is, which keeps verification time independent
//! of where the key lives (see the server's key cache and its timing test).
//!
//! The compression function is `sha2`'s; this module only frames blocks.
//! The tests check it against the `hmac` crate on random keys and messages
//! of every length around the block boundaries.

use sha2::{Digest as _, Sha512};
use zeroize::Zeroize;

const BLOCK: usize = 128;
/// SHA-512's initial state (FIPS 180-4, 5.3.5).
const IV: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

fn compress(state: &mut [u64; 8], blocks: &[[u8; BLOCK]]) {
    sha2::block_api::compress512(state, blocks);
}

/// The keyed state: the SHA-512 states after the inner and the outer pad.
/// Zeroized on drop.
#[derive(Clone)]
#[repr(C, align(64))]
pub(crate) struct Midstates {
    inner: [u64; 8],
    outer: [u64; 8],
}

impl Midstates {
    pub(crate) fn new(secret: &[u8]) -> Self {
        // A key longer than a block is replaced by its SHA-512 (the hasher
        // zeroizes itself on drop: `sha2`'s `zeroize` feature).
        let mut key = [0u8; BLOCK];
        if secret.len() > BLOCK {
            let mut digest = Sha512::digest(secret);
            key[..digest.len()].copy_from_slice(&digest);
            digest.zeroize();
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let pad = |byte: u8| {
            let mut block = key.map(|b| b ^ byte);
            let mut state = IV;
            compress(&mut state, &[block]);
            block.zeroize();
            state
        };
        let keyed = Midstates {
            inner: pad(0x36),
            outer: pad(0x5c),
        };
        key.zeroize();
        keyed
    }

    /// A MAC in progress, from the inner state.
    pub(crate) fn start(&self) -> Mac<'_> {
        Mac {
            keyed: self,
            state: self.inner,
            buf: [0; BLOCK],
            filled: 0,
            // The inner pad block is already in.
            len: BLOCK as u128,
        }
    }
}

impl Drop for Midstates {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// One MAC being computed. Its state is zeroized on drop.
pub(crate) struct Mac<'k> {
    keyed: &'k Midstates,
    state: [u64; 8],
    buf: [u8; BLOCK],
    filled: usize,
    /// Bytes hashed so far, the inner pad block included.
    len: u128,
}

impl Mac<'_> {
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u128;
        if self.filled > 0 {
            let take = data.len().min(BLOCK - self.filled);
            self.buf[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < BLOCK {
                return;
            }
            compress(&mut self.state, std::slice::from_ref(&self.buf));
            self.filled = 0;
        }
        // All whole blocks in one call: SHA-512 backends work on several
        // blocks at a time.
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        compress(&mut self.state, blocks);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// The 64-byte MAC.
    ///
    /// Once a block is compressed into them, the copies of the midstates
    /// made here hold hash values, no longer anything that could stand for
    /// the key; the one left uncompressed if a MAC is dropped unfinished is
    /// zeroized on drop.
    pub(crate) fn finish(mut self) -> [u8; 64] {
        finish_hash(&mut self.state, &mut self.buf, self.filled, self.len);
        // The outer hash: the outer pad block (in the midstate), then the
        // inner hash, padded, in one block.
        let mut block = [0u8; BLOCK];
        write_state(&self.state, &mut block[..64]);
        let mut state = self.keyed.outer;
        finish_hash(&mut state, &mut block, 64, (BLOCK + 64) as u128);
        let mut out = [0u8; 64];
        write_state(&state, &mut out);
        out
    }
}

impl Drop for Mac<'_> {
    fn drop(&mut self) {
        self.state.zeroize();
    }
}

/// SHA-512 padding: `filled` bytes of `buf` are pending, `len` bytes were
/// hashed in all.
fn finish_hash(state: &mut [u64; 8], buf: &mut [u8; BLOCK], filled: usize, len: u128) {
    buf[filled] = 0x80;
    buf[filled + 1..].fill(0);
    if filled + 1 > BLOCK - 16 {
        compress(state, std::slice::from_ref(buf));
        buf.fill(0);
    }
    buf[BLOCK - 16..].copy_from_slice(&(len * 8).to_be_bytes());
    compress(state, std::slice::from_ref(buf));
}

fn write_state(state: &[u64; 8], out: &mut [u8]) {
    for (chunk, word) in out.chunks_exact_mut(8).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit as _, Mac as _};
    use proptest::prelude::*;

    fn reference(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <Hmac<Sha512>>::new_from_slice(key).unwrap();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }

    fn ours(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let keyed = Midstates::new(key);
        let mut mac = keyed.start();
        for p in parts {
            mac.update(p);
        }
        mac.finish().to_vec()
    }

    #[test]
    fn rfc_4231_case_2() {
        let mac = ours(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn every_length_around_the_block_boundaries() {
        let data: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0, 1, 64, 127, 128, 129, 300] {
            let key = &data[..key_len];
            for len in 0..=data.len() {
                assert_eq!(
                    ours(key, &[&data[..len]]),
                    reference(key, &[&data[..len]]),
                    "key {key_len}, message {len}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn matches_the_hmac_crate(
            key in proptest::collection::vec(any::<u8>(), 0..300),
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
        ) {
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(ours(&key, &parts), reference(&key, &parts));
        }
    }
}
