//! Value parsers for the policy file: thresholds, globs and labels. Plain
//! functions from text to a policy type or the message that says what
//! would be valid, so their rules read in one place.

use std::time::Duration;

use crate::policy::{Glob, LabelMatch, Threshold};

/// `"90m"`, `"12h"`, `"7d"` (humantime); zero only where `allow_zero`.
pub(super) fn parse_duration(text: &str, allow_zero: bool) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() && !allow_zero => Err(format!(
            "must be longer than zero, not {text:?}: write a duration like \"12h\" or \"7d\""
        )),
        Ok(d) => Ok(d),
        Err(error) => Err(format!(
            "invalid duration {text:?} ({error}): expected a number and a unit, like \"90m\", \
             \"12h\" or \"7d\""
        )),
    }
}

/// The units a size may have, for messages.
const UNITS: &str = "units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";

/// `"85%"` → `Ratio(0.85)`, in (0, 100]; `"200GiB"` → `Bytes`, above zero.
/// `data` names what a size counts in messages (`image data`).
pub(super) fn parse_threshold(text: &str, data: &str) -> Result<Threshold, String> {
    let valid = format!(
        "expected a percentage of the disk like \"85%\", or a size of {data} like \"200GiB\" \
         ({UNITS})"
    );
    let trimmed = text.trim();
    if let Some(number) = trimmed.strip_suffix('%') {
        return match number.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(Threshold::Ratio(p / 100.0)),
            Ok(_) => Err(format!(
                "invalid percentage {text:?}: must be more than 0% and at most 100%"
            )),
            Err(_) => Err(format!("invalid percentage {text:?}: {valid}")),
        };
    }
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{text:?} has no unit: write a percentage like \"85%\" or a size like \"200GiB\""
        ));
    }
    match trimmed.parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(Threshold::Bytes(size.as_u64())),
        Ok(_) => Err(format!("invalid size {text:?}: must be more than zero")),
        Err(_) => Err(format!("invalid size {text:?}: {valid}")),
    }
}

/// `"90%"` → 0.9, in (0, 100]: an inode watermark, which is a share of the
/// filesystem's inodes only (no engine says how many inodes an image holds,
/// so there is no amount of data to count them in).
pub(super) fn parse_percentage(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let Some(number) = trimmed.strip_suffix('%') else {
        let what = if trimmed.parse::<bytesize::ByteSize>().is_ok()
            && !trimmed.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            "a size"
        } else {
            "not a percentage"
        };
        return Err(format!(
            "{text:?} is {what}, but inode watermarks are percentages of the filesystem's \
             inodes (as `df -i` counts IUse%): write a percentage like \"90%\""
        ));
    };
    match number.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        Ok(_) => Err(format!(
            "invalid percentage {text:?}: must be more than 0% and at most 100%"
        )),
        Err(_) => Err(format!(
            "invalid percentage {text:?}: expected a percentage of the filesystem's inodes \
             like \"90%\""
        )),
    }
}

/// `"20GiB"` → bytes, above zero, with a unit: the sizes of
/// [`parse_threshold`], without percentages.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let valid = format!("expected a size like \"20GiB\" or \"500MB\" ({UNITS})");
    let trimmed = text.trim();
    if trimmed.ends_with('%') {
        return Err(format!(
            "{text:?} is a percentage, but this is a size of build-cache data: write a size \
             like \"20GiB\""
        ));
    }
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{text:?} has no unit: write a size like \"20GiB\" ({UNITS})"
        ));
    }
    match trimmed.parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(size.as_u64()),
        Ok(_) => Err(format!(
            "invalid size {text:?}: must be more than zero; to remove every record the policy \
             selects, use unused_for or older_than instead"
        )),
        Err(_) => Err(format!("invalid size {text:?}: {valid}")),
    }
}

/// A glob where `*` stays within one `/` segment and `**` crosses them.
pub(super) fn compile_glob(pattern: &str) -> Result<Glob, String> {
    if pattern.is_empty() {
        return Err("empty glob: write a pattern like \"ci/*\" or \"**/build-*\"".to_string());
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| Glob {
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
        .map_err(|error| {
            format!(
                "invalid glob {pattern:?}: {}; expected a pattern like \"ci/*\" or \"**/build-*\"",
                error.kind()
            )
        })
}

/// `key` or `key=value`, with a non-empty key.
pub(super) fn parse_label(text: &str) -> Result<LabelMatch, String> {
    let valid = "write `key` (label present) or `key=value`";
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (text, None),
    };
    if key.trim().is_empty() {
        return Err(format!("invalid label {text:?}: the key is empty; {valid}"));
    }
    let spaced = key != key.trim() || value.is_some_and(|v| v.starts_with(char::is_whitespace));
    if spaced {
        return Err(format!(
            "invalid label {text:?}: spaces around the key or `=` would never match; {valid}, \
             without spaces"
        ));
    }
    Ok(LabelMatch {
        key: key.to_string(),
        value: value.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_accept_percentages_and_sizes_with_units_only() {
        let parse = |text| parse_threshold(text, "image data");
        assert_eq!(parse("85%"), Ok(Threshold::Ratio(0.85)));
        assert_eq!(parse("100 %"), Ok(Threshold::Ratio(1.0)));
        assert_eq!(
            parse("200GiB"),
            Ok(Threshold::Bytes(200 * 1024 * 1024 * 1024))
        );
        for bad in ["0%", "100.5%", "NaN%", "inf%", "85", "0B", "", "%", "lots"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes_are_the_sizes_of_thresholds_without_percentages() {
        assert_eq!(parse_size("20GiB"), Ok(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_size(" 500 MB "), Ok(500_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        for text in ["20GiB", "500MB", "1TB", "7 KiB"] {
            assert_eq!(
                parse_size(text).map(Threshold::Bytes),
                parse_threshold(text, "x"),
                "{text}"
            );
        }
        for bad in ["20%", "20", "0B", "", "lots", "-1GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn labels_need_a_key_and_no_spaces_around_the_equals_sign() {
        assert_eq!(
            parse_label("tier=prod"),
            Ok(LabelMatch {
                key: "tier".into(),
                value: Some("prod".into())
            })
        );
        assert_eq!(
            parse_label("keep"),
            Ok(LabelMatch {
                key: "keep".into(),
                value: None
            })
        );
        assert!(parse_label("=x").is_err());
        assert!(parse_label("tier = prod").is_err());
    }
}
