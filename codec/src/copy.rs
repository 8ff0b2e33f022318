//! Byte copies that stay fast whatever the relative alignment of source and destination.
//!
//! `copy_from_slice` calls the C library's `memcpy`. glibc's x86-64 `memcpy` switches to
//! `rep movsb` for copies of a few KiB, and on some CPUs (measured on the AMD EPYC machine the
//! benchmarks ran on) `rep movsb` runs 20–35 times slower when the destination is 1 to 15
//! bytes past the source modulo 4096: a 4 KiB copy takes ~1.7 µs instead of ~50 ns. Device
//! states, stream bodies and caller buffers sit at arbitrary byte offsets, so a decode of a
//! large body would be fast or slow by chance. Large copies at such a distance are therefore
//! done as 64-byte pieces, which compile to vector loads and stores.

/// Below this length `memcpy` does not use `rep movsb` (measured: 2,100 bytes at a bad distance
/// copy at full speed, 3,000 do not; glibc's threshold is about 2 KiB on this machine).
pub(crate) const LARGE: usize = 2048;

/// Copies `src` into `dst`, which have the same length (as `copy_from_slice`, whose
/// precondition callers already establish).
#[inline]
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    let distance = (dst.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize) % 4096;
    if dst.len() < LARGE || !(1..64).contains(&distance) {
        dst.copy_from_slice(src);
    } else {
        copy_pieces(dst, src);
    }
}

/// [`copy`], then clears the `zeros` ranges (`(offset, len)` into `dst`; a copy plan's unused
/// bytes). Ranges outside `dst` are ignored.
#[inline]
pub(crate) fn copy_with_zeros(dst: &mut [u8], src: &[u8], zeros: &[(u32, u32)]) {
    copy(dst, src);
    for &(o, l) in zeros {
        let (o, l) = (o as usize, l as usize);
        if let Some(z) = o.checked_add(l).and_then(|e| dst.get_mut(o..e)) {
            z.fill(0);
        }
    }
}

#[inline(never)]
fn copy_pieces(dst: &mut [u8], src: &[u8]) {
    let mut d = dst.chunks_exact_mut(64);
    let mut s = src.chunks_exact(64);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    d.into_remainder().copy_from_slice(s.remainder());
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failed test"
)]
mod tests {
    extern crate std;
    use super::*;

    /// Every length around the threshold, at every distance that takes the piecewise copy and
    /// a few that do not: the same bytes as `copy_from_slice`, nothing outside `dst` touched.
    #[test]
    fn copies_the_same_bytes_at_every_distance() {
        let src: std::vec::Vec<u8> = (0..6000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf = std::vec![0u8; 16384];
        let base = buf.as_ptr() as usize;
        for len in [0, 1, 63, 64, 65, 2047, 2048, 2049, 4096, 4097, 5000] {
            for distance in [0usize, 1, 8, 15, 16, 63, 64, 100] {
                // Place dst so that (dst - src) mod 4096 == distance.
                let want = (src.as_ptr() as usize + distance).wrapping_sub(base) % 4096;
                let at = 4096 + want;
                buf.fill(0xee);
                copy(&mut buf[at..at + len], &src[..len]);
                assert_eq!(
                    &buf[at..at + len],
                    &src[..len],
                    "len {len} distance {distance}"
                );
                assert!(buf[..at].iter().all(|&b| b == 0xee));
                assert!(buf[at + len..].iter().all(|&b| b == 0xee));
            }
        }
    }
}
