//! What unanimity cannot catch, stated.

/// The chance that a coalition of `cheaters` among `providers` holds every
/// one of `replicas` replicas of a task, the replicas drawn without
/// replacement: C(c,k) / C(N,k). A selective coalition that cheats only then
/// is never contradicted, so this is the share of replicated tasks it can
/// pass a wrong result on.
pub fn coalition_bound(providers: u64, cheaters: u64, replicas: u64) -> f64 {
    if replicas > providers || cheaters < replicas {
        return 0.0;
    }
    // C(c,k)/C(N,k) = Π_{i<k} (c-i)/(N-i), which stays in range for any N.
    (0..replicas)
        .map(|i| (cheaters - i) as f64 / (providers - i) as f64)
        .product()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_hypergeometric_share() {
        assert!((coalition_bound(100, 20, 2) - 20.0 * 19.0 / (100.0 * 99.0)).abs() < 1e-12);
        assert!(
            (coalition_bound(100, 20, 3) - 20.0 * 19.0 * 18.0 / (100.0 * 99.0 * 98.0)).abs()
                < 1e-12
        );
        assert_eq!(
            coalition_bound(10, 1, 2),
            0.0,
            "one cheater cannot hold two replicas"
        );
        assert_eq!(coalition_bound(3, 3, 3), 1.0);
        assert_eq!(coalition_bound(2, 2, 3), 0.0);
    }
}
