//! JSON the way Python's `json.dump(..., indent=4)` writes it, which is what spectrum.py
//! produces: non-finite floats as bare `Infinity`, `-Infinity` and `NaN`, floats in `repr`
//! form (`1e-05`, `13.589866638183594`).

/// A float as Python's `repr(float)` writes it: the shortest digits that round-trip, fixed
/// notation for exponents in `-4..16`, otherwise `d.ddde+XX`.
pub(super) fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the fewest digits that round-trip ("-1.2345e-5"). Several strings of
    // that length may round-trip; Python prints the correctly rounded one (ties to even), and
    // so does `{:.Ne}`.
    let shortest = format!("{value:e}");
    let digits = shortest
        .chars()
        .take_while(|c| *c != 'e')
        .filter(char::is_ascii_digit)
        .count();
    let scientific = format!("{value:.*e}", digits.saturating_sub(1));
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

/// A JSON string literal (module names are plain ASCII; `serde_json` escapes the rest).
pub(super) fn string(value: &str) -> String {
    serde_json::to_string(value).expect("a string always serializes")
}

#[cfg(test)]
mod tests {
    use super::float_repr;

    /// Expected strings are what CPython 3.11 prints for `repr(x)`.
    // Exact f32 values written out in full: that is what the test is about.
    #[allow(clippy::excessive_precision)]
    #[test]
    fn matches_python_repr() {
        let cases = [
            (13.589866638183594, "13.589866638183594"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456.0, "123456.0"),
            (0.001234, "0.001234"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (1.2345678e-7, "1.2345678e-07"),
            (2.0e100, "2e+100"),
            (1.27249908447265625, "1.2724990844726562"),
            (0.60138702392578125, "0.6013870239257812"),
        ];
        for (value, want) in cases {
            assert_eq!(float_repr(value), want, "{value}");
        }
    }
}
