//! Checks `src/nn/nf4.rs` bit for bit against `tests/fixtures/nf4/nf4_cases.safetensors`,
//! made by `scripts/make_nf4_fixtures.py` (a numpy re-statement of bitsandbytes' CUDA NF4 and
//! double-quantization kernels; see that script and `tests/fixtures/nf4/README.md`).

use super::nf4::{
    Absmax, NF4_CODE, NF4_THRESHOLDS, dequantize, dequantize_blockwise_8bit, dynamic_map_signed,
    quantize, quantize_blockwise_8bit,
};

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use safetensors::{Dtype, SafeTensors};

use super::Nf4Weight;
use super::params::f32_values;

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nf4");

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let path = format!("{FIXTURE_DIR}/nf4_cases.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Self { bytes }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn cases(&self) -> Vec<String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).unwrap();
        let map = meta.metadata().clone().expect("metadata");
        map["cases"].split(',').map(str::to_owned).collect()
    }

    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v, t.shape().to_vec())
    }

    fn u8s(&self, name: &str) -> Vec<u8> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::U8, "{name}");
        t.data().to_vec()
    }
}

/// Equal bit for bit (so `-0.0 != 0.0`), except that any two NaNs are equal.
#[track_caller]
fn assert_bits_eq(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let bad: Vec<String> = ours
        .iter()
        .zip(reference)
        .enumerate()
        .filter(|(_, (a, b))| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
        .take(5)
        .map(|(i, (a, b))| {
            format!(
                "[{i}] ours {a:e} ({:#010x}) ref {b:e} ({:#010x})",
                a.to_bits(),
                b.to_bits()
            )
        })
        .collect();
    assert!(bad.is_empty(), "{what}: {}", bad.join(", "));
}

#[track_caller]
fn assert_bytes_eq(what: &str, ours: &[u8], reference: &[u8]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let bad: Vec<String> = ours
        .iter()
        .zip(reference)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(5)
        .map(|(i, (a, b))| format!("[{i}] ours {a:#04x} ref {b:#04x}"))
        .collect();
    assert!(bad.is_empty(), "{what}: {}", bad.join(", "));
}

#[test]
fn tables_match_the_reference() {
    let fx = Fixture::load();
    assert_bits_eq("nf4_code", &NF4_CODE, &fx.f32s("nf4_code").0);
    assert_bits_eq(
        "nf4_thresholds",
        &NF4_THRESHOLDS,
        &fx.f32s("nf4_thresholds").0,
    );
    assert_bits_eq(
        "dynamic_map",
        &dynamic_map_signed(),
        &fx.f32s("dynamic_map").0,
    );
}

#[test]
fn nf4_cases_match_bit_for_bit() {
    let fx = Fixture::load();
    let cases = fx.cases();
    assert!(cases.len() >= 6, "{cases:?}");
    for case in &cases {
        let (input, shape) = fx.f32s(&format!("{case}.input"));
        let shape: [usize; 2] = shape.try_into().expect("2-D input");

        // Plain absmax.
        let t = quantize(&input, shape, false).unwrap();
        assert_bytes_eq(
            &format!("{case}.packed"),
            &t.packed,
            &fx.u8s(&format!("{case}.packed")),
        );
        let Absmax::Plain(absmax) = &t.absmax else {
            panic!("{case}: expected plain absmax")
        };
        assert_bits_eq(
            &format!("{case}.absmax"),
            absmax,
            &fx.f32s(&format!("{case}.absmax")).0,
        );
        assert_bits_eq(
            &format!("{case}.dequant"),
            &dequantize(&t).unwrap(),
            &fx.f32s(&format!("{case}.dequant")).0,
        );

        // Double quantization.
        let t2 = quantize(&input, shape, true).unwrap();
        assert_eq!(
            t2.packed, t.packed,
            "{case}: packed codes do not depend on double quantization"
        );
        let Absmax::Double(dq) = &t2.absmax else {
            panic!("{case}: expected double quant")
        };
        assert_bytes_eq(
            &format!("{case}.dq_codes"),
            &dq.codes,
            &fx.u8s(&format!("{case}.dq_codes")),
        );
        assert_bits_eq(
            &format!("{case}.dq_scales"),
            &dq.scales,
            &fx.f32s(&format!("{case}.dq_scales")).0,
        );
        assert_bits_eq(
            &format!("{case}.dq_offset"),
            &[dq.offset],
            &fx.f32s(&format!("{case}.dq_offset")).0,
        );
        assert_bits_eq(
            &format!("{case}.dq_absmax"),
            &t2.absmax_f32(),
            &fx.f32s(&format!("{case}.dq_absmax")).0,
        );
        assert_bits_eq(
            &format!("{case}.dq_dequant"),
            &dequantize(&t2).unwrap(),
            &fx.f32s(&format!("{case}.dq_dequant")).0,
        );
    }
}

#[test]
fn dynamic_8bit_path_matches_bit_for_bit() {
    let fx = Fixture::load();
    let (input, _) = fx.f32s("dyn8.input");
    let (codes, scales) = quantize_blockwise_8bit(&input);
    assert_bytes_eq("dyn8.codes", &codes, &fx.u8s("dyn8.codes"));
    assert_bits_eq("dyn8.scales", &scales, &fx.f32s("dyn8.scales").0);
    assert_bits_eq(
        "dyn8.dequant",
        &dequantize_blockwise_8bit(&codes, &scales),
        &fx.f32s("dyn8.dequant").0,
    );
}

/// The NF4 weight on a Burn backend (codes packed 8 per integer) against the reference.
#[test]
fn the_burn_nf4_weight_dequantizes_like_the_reference() {
    let device = Default::default();
    let (out, inp) = (48, 320); // 15360 values: 240 blocks, so the last absmax block is partial.
    let w: Tensor<Flex, 2> = Tensor::random([out, inp], Distribution::Normal(0.0, 0.02), &device);
    let rows = f32_values(w);
    let reference = dequantize(&quantize(&rows, [out, inp], true).unwrap()).unwrap();
    let weight = Nf4Weight::<Flex>::quantize(&rows, [out, inp], &device).unwrap();
    // Burn's layout is [in, out]: compare with the reference transposed back.
    let got = f32_values(weight.dequantize().transpose());
    assert_eq!(got, reference);
    // About half a byte per weight: 4 bits of code plus double-quantized scales.
    let bytes_per_weight = weight.storage_bytes() as f64 / (out * inp) as f64;
    assert!(bytes_per_weight < 0.52, "{bytes_per_weight}");
    assert!(Nf4Weight::<Flex>::quantize(&rows[..100], [1, 100], &device).is_err());
}
