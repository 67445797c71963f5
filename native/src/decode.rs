//! Stage 1 in Rust: raw record bytes -> the routing fields, or a dead-letter verdict worded as
//! `hitl_gateway.codec.decode` words it, or `Unsupported` where this port does not reproduce
//! the Python path's wording (the caller then runs the Python path).

use serde_json::{Map, Value};

/// Deepest nesting a record may have (codec.MAX_DEPTH).
const MAX_DEPTH: usize = 128;

pub struct Judge {
    pub score: Option<f64>,
    pub grade: Option<String>,
}

pub struct Record {
    pub id: String,
    pub domain: String,
    pub confidence: Option<f64>,
    pub language: Option<String>,
    pub model: Option<String>,
    pub judge: Option<Judge>,
    pub metadata: Option<Vec<(String, String)>>,
}

impl Record {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()))
    }
}

pub enum Decoded {
    Record(Record),
    Invalid(&'static str, String),
    /// Not ported: the Python path decides (with the reason, for counting).
    Unsupported(&'static str),
}

struct FieldError {
    loc: String,
    kind: &'static str,
    msg: String,
}

pub fn decode(value: Option<&[u8]>, max_bytes: usize, max_id_length: usize) -> Decoded {
    let Some(value) = value else {
        return Decoded::Invalid("null_value", "record value is null (a tombstone)".into());
    };
    if value.len() > max_bytes {
        let msg = format!("record value is {} bytes, limit {}", value.len(), max_bytes);
        return Decoded::Invalid("too_large", msg);
    }
    let parsed: Value = match serde_json::from_slice(value) {
        Ok(parsed) => parsed,
        Err(_) => {
            if let Err(err) = std::str::from_utf8(value) {
                let msg = format!("record is not valid UTF-8 at byte {}", err.valid_up_to());
                return Decoded::Invalid("not_utf8", msg);
            }
            // orjson's own error text, and the lenient re-parse that words NaN as an
            // out-of-range field, are the Python path's.
            return Decoded::Unsupported("not strict JSON");
        }
    };
    let object = match parsed {
        Value::Object(object) => object,
        ref number if negative_zero(number) => return Decoded::Unsupported("negative zero"),
        other => {
            let kind = match other {
                Value::Array(_) => "list",
                Value::String(_) => "str",
                Value::Bool(_) => "bool",
                Value::Null => "NoneType",
                Value::Number(ref n) if n.is_i64() || n.is_u64() => "int",
                _ => "float",
            };
            let msg = format!("record is a JSON {kind}, not an object");
            return Decoded::Invalid("not_object", msg);
        }
    };
    if deeper_than(&object, MAX_DEPTH) {
        let msg = format!("record nests deeper than {MAX_DEPTH} levels");
        return Decoded::Invalid("too_deep", msg);
    }
    validate(object, max_id_length)
}

/// Whether an object nests deeper than `limit` (the object itself is level 1).
fn deeper_than(object: &Map<String, Value>, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = object.values().map(|v| (v, 1)).collect();
    while let Some((node, level)) = stack.pop() {
        match node {
            Value::Object(map) => {
                if level + 1 > limit {
                    return true;
                }
                stack.extend(map.values().map(|v| (v, level + 1)));
            }
            Value::Array(items) => {
                if level + 1 > limit {
                    return true;
                }
                stack.extend(items.iter().map(|v| (v, level + 1)));
            }
            _ => {}
        }
    }
    false
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "character"
    } else {
        "characters"
    }
}

/// pydantic's strict `str` with length bounds: the error, if any.
fn check_str(v: &Value, min: usize, max: usize) -> Result<String, (&'static str, String)> {
    let Value::String(s) = v else {
        return Err(("string_type", "Input should be a valid string".into()));
    };
    let n = chars(s);
    if n < min {
        return Err((
            "string_too_short",
            format!("String should have at least {min} {}", plural(min)),
        ));
    }
    if n > max {
        return Err((
            "string_too_long",
            format!("String should have at most {max} {}", plural(max)),
        ));
    }
    Ok(s.clone())
}

/// serde_json reads `-0` as the float -0.0, where orjson reads the int 0: the two cannot
/// be told apart after parsing, so a record with a negative zero where it matters is
/// declined.
fn negative_zero(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()))
}

/// pydantic's strict `float` (ints accepted, bools not); JSON numbers are finite here.
fn check_float(v: &Value) -> Result<f64, (&'static str, String)> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        _ => Err(("float_type", "Input should be a valid number".into())),
    }
}

const LANGUAGE_PATTERN: &str = "^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$";

/// `^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$`, as the regex crate reads it (`$` is the end).
fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or("");
    if !(2..=8).contains(&first.len()) || !first.bytes().all(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

/// The RFC 3339 subset this port accepts as a datetime:
/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, every part in range. pydantic accepts
/// far more (dates, timestamps, other separators); those are left to the Python path.
fn is_plain_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |from: usize, to: usize| -> Option<u32> {
        let part = b.get(from..to)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0, 4),
        digits(5, 7),
        digits(8, 10),
        digits(11, 13),
        digits(14, 16),
        digits(17, 19),
    ) else {
        return false;
    };
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return false;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut at = 19;
    if b[at] == b'.' {
        let start = at + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if !(1..=6).contains(&(end - start)) {
            return false;
        }
        at = end;
    }
    match &b[at..] {
        [b'Z'] => true,
        [sign, _, _, b':', _, _] if *sign == b'+' || *sign == b'-' => {
            matches!((digits(at + 1, at + 3), digits(at + 4, at + 6)), (Some(h), Some(m)) if h <= 14 && m <= 59)
        }
        _ => false,
    }
}

fn validate(mut object: Map<String, Value>, max_id_length: usize) -> Decoded {
    let score = match object.get("judge") {
        Some(Value::Object(judge)) => judge.get("score"),
        _ => None,
    };
    if object.get("confidence").is_some_and(negative_zero) || score.is_some_and(negative_zero) {
        return Decoded::Unsupported("negative zero");
    }
    let mut errors: Vec<FieldError> = Vec::new();
    let mut push = |loc: &str, (kind, msg): (&'static str, String)| {
        errors.push(FieldError {
            loc: loc.to_string(),
            kind,
            msg,
        });
    };
    let mut required = |name: &str, max: usize, object: &Map<String, Value>| match object.get(name)
    {
        None => {
            push(name, ("missing", "Field required".into()));
            None
        }
        Some(v) => check_str(v, 1, max).map_err(|e| push(name, e)).ok(),
    };
    let id = required("id", 4_096, &object);
    let domain = required("domain", 128, &object);

    let confidence = match object.get("confidence") {
        None | Some(Value::Null) => None,
        Some(v) => match check_float(v) {
            Ok(c) if c < 0.0 => {
                let msg = "Input should be greater than or equal to 0".into();
                push("confidence", ("greater_than_equal", msg));
                None
            }
            Ok(c) if c > 1.0 => {
                push(
                    "confidence",
                    (
                        "less_than_equal",
                        "Input should be less than or equal to 1".into(),
                    ),
                );
                None
            }
            Ok(c) => Some(c),
            Err(e) => {
                push("confidence", e);
                None
            }
        },
    };
    let language = match object.get("language") {
        None | Some(Value::Null) => None,
        Some(v) => match check_str(v, 0, 64) {
            Ok(s) if is_language_tag(&s) => Some(s),
            Ok(_) => {
                let msg = format!("String should match pattern '{LANGUAGE_PATTERN}'");
                push("language", ("string_pattern_mismatch", msg));
                None
            }
            Err(e) => {
                push("language", e);
                None
            }
        },
    };
    let model = match object.get("model") {
        None | Some(Value::Null) => None,
        Some(v) => check_str(v, 0, 256).map_err(|e| push("model", e)).ok(),
    };
    let judge = match object.get("judge") {
        None | Some(Value::Null) => None,
        Some(Value::Object(j)) => {
            let score = match j.get("score") {
                None | Some(Value::Null) => None,
                Some(v) => check_float(v).map_err(|e| push("judge.score", e)).ok(),
            };
            let grade = match j.get("grade") {
                None | Some(Value::Null) => None,
                Some(v) => check_str(v, 0, 64).map_err(|e| push("judge.grade", e)).ok(),
            };
            if let Some(v) = j.get("model") {
                if !v.is_null() {
                    let _ = check_str(v, 0, 256).map_err(|e| push("judge.model", e));
                }
            }
            Some(Judge { score, grade })
        }
        Some(_) => {
            let msg = "Input should be a valid dictionary or instance of Judge".into();
            push("judge", ("model_type", msg));
            None
        }
    };
    let metadata = match object.get_mut("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut pairs = Vec::with_capacity(m.len());
            for (k, v) in std::mem::take(m) {
                match v {
                    Value::String(s) => pairs.push((k, s)),
                    _ => push(
                        &format!("metadata.{k}"),
                        ("string_type", "Input should be a valid string".into()),
                    ),
                }
            }
            Some(pairs)
        }
        Some(_) => {
            push(
                "metadata",
                ("dict_type", "Input should be a valid dictionary".into()),
            );
            None
        }
    };
    match object.get("created_at") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if is_plain_datetime(s) => {}
        Some(_) => return Decoded::Unsupported("created_at outside the ported subset"),
    }
    if let Some(first) = errors.first() {
        let reason = match first.kind {
            "missing" => "missing_field",
            "string_type" | "float_type" | "dict_type" | "model_type" => "wrong_type",
            "greater_than_equal" | "less_than_equal" | "string_too_long" | "string_too_short" => {
                "out_of_range"
            }
            _ => "invalid_field",
        };
        let extra = if errors.len() > 1 {
            format!(" (+{} more)", errors.len() - 1)
        } else {
            String::new()
        };
        return Decoded::Invalid(
            reason,
            format!("field '{}': {}{}", first.loc, first.msg, extra),
        );
    }
    let (Some(id), Some(domain)) = (id, domain) else {
        unreachable!("no errors, so both required fields are present");
    };
    let n = chars(&id);
    if n > max_id_length {
        let msg = format!("id is {n} characters, limit {max_id_length}");
        return Decoded::Invalid("out_of_range", msg);
    }
    Decoded::Record(Record {
        id,
        domain,
        confidence,
        language,
        model,
        judge,
        metadata,
    })
}
