//! Stage 1 in Rust: raw record bytes -> the routing fields, or a dead-letter verdict worded as
//! `hitl_gateway.codec.decode` words it, or `Unsupported` where this port does not reproduce
//! the Python path's wording (the caller then runs the Python path).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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
    let top = match parse(value) {
        Ok(top) => top,
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
    let (fields, depth) = match top {
        Top::Object(fields, depth) => (fields, depth),
        Top::NegativeZero => return Decoded::Unsupported("negative zero"),
        Top::Other(kind) => {
            let msg = format!("record is a JSON {kind}, not an object");
            return Decoded::Invalid("not_object", msg);
        }
    };
    if depth > MAX_DEPTH {
        let msg = format!("record nests deeper than {MAX_DEPTH} levels");
        return Decoded::Invalid("too_deep", msg);
    }
    validate(fields, max_id_length)
}

/// The routing fields of a record, as parsed (absent: None; JSON null: `Some(Value::Null)`).
/// A key given twice keeps its last value, as orjson does.
#[derive(Default)]
struct Fields {
    id: Option<Value>,
    domain: Option<Value>,
    confidence: Option<Value>,
    language: Option<Value>,
    model: Option<Value>,
    judge: Option<Value>,
    metadata: Option<Value>,
    created_at: Option<Value>,
}

#[allow(clippy::large_enum_variant)] // one per record, moved once
enum Top {
    /// The routing fields and the record's nesting depth.
    Object(Fields, usize),
    /// Not an object: the Python type orjson would have made of it.
    Other(&'static str),
    NegativeZero,
}

/// The whole value parsed as strictly as into a `serde_json::Value` (every string unescaped
/// and checked, every number converted, so `1e400` anywhere is an error), keeping only the
/// routing fields: the rest (the model's output) is walked without being stored.
fn parse(value: &[u8]) -> serde_json::Result<Top> {
    let mut de = serde_json::Deserializer::from_slice(value);
    let top = de.deserialize_any(TopVisitor)?;
    de.end()?;
    Ok(top)
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut fields = Fields::default();
        let mut deepest = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let slot = match key.as_ref() {
                "id" => &mut fields.id,
                "domain" => &mut fields.domain,
                "confidence" => &mut fields.confidence,
                "language" => &mut fields.language,
                "model" => &mut fields.model,
                "judge" => &mut fields.judge,
                "metadata" => &mut fields.metadata,
                "created_at" => &mut fields.created_at,
                _ => {
                    deepest = deepest.max(map.next_value_seed(Skip)?);
                    continue;
                }
            };
            let value: Value = map.next_value()?;
            deepest = deepest.max(value_depth(&value));
            *slot = Some(value);
        }
        Ok(Top::Object(fields, deepest + 1))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(Top::Other("list"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other("str"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other("bool"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top, E> {
        Ok(Top::Other("NoneType"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other("int"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other("int"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Top, E> {
        if v == 0.0 && v.is_sign_negative() {
            return Ok(Top::NegativeZero);
        }
        Ok(Top::Other("float"))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// A value walked and checked but not kept; its nesting depth (a scalar is 0).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut deepest = 0;
        while map.next_key_seed(Skip)?.is_some() {
            deepest = deepest.max(map.next_value_seed(Skip)?);
        }
        Ok(deepest + 1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut deepest = 0;
        while let Some(depth) = seq.next_element_seed(Skip)? {
            deepest = deepest.max(depth);
        }
        Ok(deepest + 1)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
}

/// Nesting depth of a parsed value (a scalar is 0, `{}` and `[]` are 1).
fn value_depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
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

fn validate(mut fields: Fields, max_id_length: usize) -> Decoded {
    let score = match &fields.judge {
        Some(Value::Object(judge)) => judge.get("score"),
        _ => None,
    };
    if fields.confidence.as_ref().is_some_and(negative_zero) || score.is_some_and(negative_zero) {
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
    let mut required = |name: &str, max: usize, value: Option<&Value>| match value {
        None => {
            push(name, ("missing", "Field required".into()));
            None
        }
        Some(v) => check_str(v, 1, max).map_err(|e| push(name, e)).ok(),
    };
    let id = required("id", 4_096, fields.id.as_ref());
    let domain = required("domain", 128, fields.domain.as_ref());

    let confidence = match fields.confidence.as_ref() {
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
    let language = match fields.language.as_ref() {
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
    let model = match fields.model.as_ref() {
        None | Some(Value::Null) => None,
        Some(v) => check_str(v, 0, 256).map_err(|e| push("model", e)).ok(),
    };
    let judge = match fields.judge.as_ref() {
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
    let metadata = match fields.metadata.take() {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut pairs = Vec::with_capacity(m.len());
            for (k, v) in m {
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
    match fields.created_at.as_ref() {
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
