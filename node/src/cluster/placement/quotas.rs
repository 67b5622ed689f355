//! Each node's quota: its capacity-weighted share of all replicas, bent to
//! what the zone rule allows and rounded to whole replicas that add up to
//! exactly the total.

/// Each node's fair number of replicas: proportional to capacity, except where the zone rule
/// forbids it. With at least `want` zones a zone can hold at most one replica of a partition;
/// with fewer, every zone holds at least one and at most what its nodes and the other zones'
/// minimums leave. No node holds two replicas of a partition. Rounding zone totals first and
/// then the nodes within each zone keeps every rounded total inside those bounds, so the
/// quotas can always be met exactly.
pub(super) fn quotas(
    weights: &[f64],
    zone: &[usize],
    zones: usize,
    want: usize,
    partitions: usize,
) -> Vec<u64> {
    let parts = partitions as f64;
    let total = (partitions as u64).saturating_mul(want as u64);
    let members = |z: usize| zone.iter().zip(weights).filter(move |&(&nz, _)| nz == z);
    let zone_bounds: Vec<(f64, f64, f64)> = (0..zones)
        .map(|z| {
            let weight = members(z).map(|(_, w)| w).sum();
            if want <= zones {
                (weight, 0.0, parts)
            } else {
                let most = members(z).count().min(want - zones + 1) as f64;
                (weight, parts, parts * most)
            }
        })
        .collect();
    let zone_totals = round_to_total(&water_fill(&zone_bounds, total as f64), total);
    let mut quotas = vec![0; weights.len()];
    for (z, zone_total) in zone_totals.into_iter().enumerate() {
        let bounds: Vec<(f64, f64, f64)> = members(z).map(|(_, &w)| (w, 0.0, parts)).collect();
        let split = round_to_total(&water_fill(&bounds, zone_total as f64), zone_total);
        let in_zone = zone.iter().enumerate().filter(|&(_, &nz)| nz == z);
        for ((node, _), quota) in in_zone.zip(split) {
            if let Some(slot) = quotas.get_mut(node) {
                *slot = quota;
            }
        }
    }
    quotas
}

/// Splits `total` over items given as `(weight, least, most)`: item i gets
/// `clamp(level * weight, least, most)` with the level chosen so the parts add up to `total`
/// (the bounds always allow it here). Bisection, because it needs only IEEE basic arithmetic,
/// which every platform rounds the same way.
fn water_fill(items: &[(f64, f64, f64)], total: f64) -> Vec<f64> {
    let part = |level: f64, &(w, least, most): &(f64, f64, f64)| (level * w).clamp(least, most);
    let sum = |level: f64| items.iter().map(|i| part(level, i)).sum::<f64>();
    let (mut low, mut high) = (0.0, 0.0_f64);
    for &(w, least, most) in items {
        high = high.max(most.max(least) / w);
    }
    // 200 halvings reach the float resolution even for a level of 1e-19 (capacity u64::MAX).
    for _ in 0..200 {
        let mid = (low + high) / 2.0;
        if sum(mid) < total {
            low = mid;
        } else {
            high = mid;
        }
    }
    items.iter().map(|i| part(high, i)).collect()
}

/// Rounds `values` (which add up to about `total`) to whole numbers that add up to `total`:
/// everyone gets the floor, and the largest remainders (lowest index on ties) get one more.
fn round_to_total(values: &[f64], total: u64) -> Vec<u64> {
    let mut rounded: Vec<u64> = values.iter().map(|v| v.max(0.0).floor() as u64).collect();
    let short = total.saturating_sub(rounded.iter().sum());
    let mut order: Vec<(usize, f64)> = values.iter().map(|v| v - v.floor()).enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, _) in order
        .into_iter()
        .take(usize::try_from(short).unwrap_or(usize::MAX))
    {
        if let Some(r) = rounded.get_mut(i) {
            *r += 1;
        }
    }
    rounded
}
