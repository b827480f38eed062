//! Numbers written as decimal text without the formatting machinery:
//! request heads, header values and Redis keys on the request path.

/// Writes `n` in decimal at the start of `out`; its length.
pub(crate) fn decimal(mut n: u64, out: &mut [u8]) -> Option<usize> {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let text = &digits[i..];
    out.get_mut(..text.len())?.copy_from_slice(text);
    Some(text.len())
}

/// Appends `n` in decimal to `out`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let k = decimal(n, &mut digits).unwrap_or(0);
    out.extend_from_slice(&digits[..k]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 100, 1_796_527_376, u64::MAX] {
            let mut out = b"s".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("s{n}").into_bytes());
        }
        let mut short = [0u8; 2];
        assert_eq!(decimal(100, &mut short), None);
        assert_eq!(decimal(42, &mut short), Some(2));
        assert_eq!(&short, b"42");
    }
}
