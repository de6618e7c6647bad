//! Numbers on the programs' command lines: the parsers every program's decimal flags go
//! through (`#[arg(value_parser = positive(..))]`), so that a NaN, an infinity, a negative
//! or a zero where it means nothing, or a value past what the program can turn into a
//! duration, is refused with the flag's name before anything starts. Whole numbers use clap's
//! own ranged parsers.

/// A parser of a finite number above 0 and at most `max` (durations, rates, factors).
pub fn positive(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s| {
        number(s).and_then(|v| match v > 0.0 && v <= max {
            true => Ok(v),
            false => Err(format!("{s}: must be a number above 0 and at most {max}")),
        })
    }
}

/// A parser of a finite number from 0 to `max` (a warm-up that may be left out).
pub fn non_negative(
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s| {
        number(s).and_then(|v| match (0.0..=max).contains(&v) {
            true => Ok(v),
            false => Err(format!("{s}: must be a number from 0 to {max}")),
        })
    }
}

fn number(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{s}: must be a finite number")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_numbers_in_range_pass() {
        let p = positive(86_400.0);
        assert_eq!(p("2.5"), Ok(2.5));
        assert_eq!(p("86400"), Ok(86_400.0));
        for bad in [
            "0", "-1", "nan", "NaN", "inf", "-inf", "1e300", "86400.5", "", "x",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        let n = non_negative(10.0);
        assert_eq!(n("0"), Ok(0.0));
        assert_eq!(n("10"), Ok(10.0));
        for bad in ["-0.1", "nan", "inf", "10.1"] {
            assert!(n(bad).is_err(), "{bad:?} accepted");
        }
        assert!(p("1e300").unwrap_err().contains("at most 86400"));
    }
}
