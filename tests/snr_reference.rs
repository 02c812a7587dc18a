//! The SNR math against torch (spectrum.py's formula), on fixtures from
//! `scripts/make_fixtures.py`.

mod common;

use burn_spectrum::spectrum::{SvdMethod, singular_values};
use burn_spectrum::spectrum::{Threshold, quantile, score};
use common::{close, fixture};
use serde_json::Value;

fn cases() -> Value {
    let text = std::fs::read_to_string(fixture("snr_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `(rows, cols)` as spectrum.py sees the weight (1-D is `1 x d`).
fn matrix_shape(case: &Value) -> (usize, usize) {
    let shape: Vec<usize> = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    match shape.as_slice() {
        [d] => (1, *d),
        [r, c] => (*r, *c),
        _ => panic!("unexpected shape {shape:?}"),
    }
}

fn check(case: &Value, singular: &[f32], what: &str, rel: f64) {
    let (rows, cols) = matrix_shape(case);
    for (threshold, key) in [
        (Threshold::Spectrum, "spectrum"),
        (Threshold::Legacy, "legacy"),
    ] {
        let want = &case[key];
        let got = score(singular, rows, cols, threshold);
        let name = format!("{} {key} ({what})", case["name"]);
        let want_snr = want["snr"].as_f64().unwrap_or(f64::INFINITY);
        assert!(
            close(got.snr as f64, want_snr, rel),
            "{name}: snr {} vs {want_snr}",
            got.snr
        );
        assert!(
            close(got.largest as f64, want["largest"].as_f64().unwrap(), rel),
            "{name}: S0"
        );
        let eps = want["noise_threshold"].as_f64().unwrap();
        assert!(
            (got.noise_threshold as f64 - eps).abs() <= rel * eps.abs() + 1e-6,
            "{name}: eps {} vs {eps}",
            got.noise_threshold
        );
        assert_eq!(
            got.signal_count as u64,
            want["signal_count"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn score_from_torch_singular_values_matches_spectrum_py() {
    for case in cases()["matrices"].as_array().unwrap() {
        check(
            case,
            &floats(&case["singular_values"]),
            "torch singular values",
            1e-6,
        );
    }
}

#[test]
fn score_from_our_singular_values_matches_spectrum_py() {
    for case in cases()["matrices"].as_array().unwrap() {
        let (rows, cols) = matrix_shape(case);
        let data = floats(&case["data"]);
        for method in [SvdMethod::Gram, SvdMethod::Svd] {
            let sv = singular_values(&data, rows, cols, method, faer::Par::Seq).unwrap();
            check(case, &sv, &format!("{method:?}"), 2e-5);
        }
    }
}

#[test]
fn all_values_above_threshold_differs_between_spectrum_and_legacy() {
    let all = cases();
    let case = all["matrices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "all_above_threshold")
        .unwrap();
    let sv = floats(&case["singular_values"]);
    let spectrum = score(&sv, 8, 8, Threshold::Spectrum);
    let legacy = score(&sv, 8, 8, Threshold::Legacy);
    assert_eq!(spectrum.signal_count, 8);
    assert!(spectrum.snr.is_finite());
    assert_eq!(legacy.snr, f32::INFINITY);
}

#[test]
fn quantiles_interpolate_like_torch() {
    for case in cases()["quantiles"].as_array().unwrap() {
        let values = floats(&case["values"]);
        let q = case["q"].as_f64().unwrap() as f32;
        let want = case["expected"].as_f64().unwrap() as f32;
        let got = quantile(&values, q);
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{values:?} q={q}: {got} vs {want}"
        );
    }
}

#[test]
fn non_finite_singular_values_give_nan() {
    let got = score(&[1.0, f32::NAN], 2, 2, Threshold::Spectrum);
    assert!(got.snr.is_nan());
}
