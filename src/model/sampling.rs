//! Choosing the next token from logits: greedy, or temperature with nucleus (top-p) sampling.
//! Pure functions on plain numbers.

use rand::Rng;

/// The index of the largest logit; the first one on ties, as `torch.argmax` picks.
pub(super) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &value) in logits.iter().enumerate() {
        if value > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Samples from `softmax(logits / temperature)` restricted to the smallest set of most likely
/// tokens whose probabilities sum to at least `top_p`. `temperature <= 0` is greedy.
pub(super) fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut impl Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let nucleus = nucleus(&probabilities(logits, temperature), top_p);
    let total: f64 = nucleus.iter().map(|&(_, p)| p).sum();
    let mut target = rng.random::<f64>() * total;
    for &(id, p) in &nucleus {
        if target < p {
            return id;
        }
        target -= p;
    }
    nucleus.last().map_or(0, |&(id, _)| id)
}

/// `softmax(logits / temperature)` in f64.
fn probabilities(logits: &[f32], temperature: f32) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let t = temperature as f64;
    let exp: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The most likely tokens, most likely first, until their mass reaches `top_p` (at least one).
fn nucleus(probabilities: &[f64], top_p: f32) -> Vec<(u32, f64)> {
    let mut ranked: Vec<(u32, f64)> = probabilities
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as u32, p))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut mass = 0.0;
    let mut keep = 0;
    for &(_, p) in &ranked {
        keep += 1;
        mass += p;
        if mass >= top_p as f64 {
            break;
        }
    }
    ranked.truncate(keep.max(1));
    ranked
}

/// The `k` largest logits as `(id, logit)`, largest first (ties: lower id first).
pub fn top_logits(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ranked: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(sample(&[0.0, 3.0, 1.0], 0.0, 0.9, &mut rng), 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 has ~0.997 of the mass; with top_p 0.9 nothing else can be drawn.
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            assert_eq!(sample(&[10.0, 4.0, 3.0], 1.0, 0.9, &mut rng), 0);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut rng = StdRng::seed_from_u64(1);
        let draws = 4000;
        let ones = (0..draws)
            .filter(|_| sample(&[0.0, 0.0], 1.0, 1.0, &mut rng) == 1)
            .count();
        // Binomial(4000, 0.5): six standard deviations is about 190.
        assert!((ones as i64 - 2000).abs() < 190, "{ones}");
    }

    #[test]
    fn top_logits_are_sorted() {
        assert_eq!(
            top_logits(&[1.0, 5.0, 3.0, 5.0], 3),
            vec![(1, 5.0), (3, 5.0), (2, 3.0)]
        );
    }
}
