//! Plumbing shared by several commands, beneath all of them: time as users write it
//! ([`time`]), waits between tries ([`backoff`]), crash-safe file writes ([`durable`]) and a
//! stable hash ([`fnv1a`]). Nothing here knows Docker, AWS or a command.

pub(crate) mod backoff;
pub(crate) mod durable;
pub(crate) mod metrics_http;
pub(crate) mod time;

/// FNV-1a, 64 bits: a stable, dependency-free hash for names and ids that must not change
/// between versions (file names of long streams, dedupe keys, TLS identities).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
