//! Stage 2 in Rust: `hitl_gateway.policy.engine.decide` over a policy set compiled by the
//! Python side (`hitl_gateway_native.compile_policies`). Every string that depends only on the
//! policy (float reprs, list reprs, tag texts, skill texts) arrives preformatted, so only what
//! depends on the record is formatted here, with Python's format rules (`fmt_g`, `{:.4f}`).

use std::collections::HashMap;

use serde::Deserialize;

use crate::decode::Record;

#[derive(Deserialize)]
pub struct Spec {
    pub pool: String,
    pub reviewers: i64,
    pub adjudicator_pool: Option<String>,
    pub sla_ms: i64,
    pub rubric: Option<String>,
    pub hold: bool,
}

#[derive(Deserialize)]
pub struct Mandatory {
    pub spec: Spec,
    pub detail: String,
}

#[derive(Deserialize)]
pub struct FullReview {
    pub name: String,
    pub spec: Spec,
    pub models: Vec<String>,
    pub metadata: Vec<(String, String)>,
    pub tags_text: String,
    pub first: Option<i64>,
}

#[derive(Deserialize)]
pub struct Cascade {
    pub spec: Spec,
    pub below: Option<f64>,
    pub below_repr: String,
    pub missing_review: bool,
    pub judge_score_below: Option<f64>,
    pub judge_score_below_repr: String,
    pub judge_grades: Vec<String>,
    pub judge_grades_repr: String,
}

#[derive(Deserialize)]
pub struct ActiveLearning {
    pub spec: Spec,
    pub low: f64,
    pub high: f64,
    pub low_repr: String,
    pub high_repr: String,
    pub boundary: Option<f64>,
    pub window: f64,
    pub count: i64,
}

#[derive(Deserialize)]
pub struct Quota {
    pub count: i64,
    pub window: f64,
    /// `min(1.0, 2 * count / expected)` when the policy names its daily volume.
    pub gate: Option<f64>,
    pub stratify_by: Vec<String>,
    pub stratum_cap: i64,
}

#[derive(Deserialize)]
pub struct Sampling {
    pub spec: Spec,
    pub blind: bool,
    pub rate: Option<f64>,
    pub rate_repr: String,
    pub quota: Option<Quota>,
}

#[derive(Deserialize)]
pub struct Deferred {
    pub spec: Spec,
    pub rate: f64,
    pub rate_repr: String,
}

#[derive(Deserialize)]
pub struct Gold {
    pub rate: f64,
    pub ids: Vec<String>,
}

#[derive(Deserialize)]
pub struct Languages {
    pub pools: HashMap<String, String>,
    pub skill_first: Vec<String>,
    /// `languages.fallback`, else routing.yaml's `review_defaults.fallback_pool`.
    pub fallback: Option<String>,
}

#[derive(Deserialize)]
pub struct Policy {
    pub domain: String,
    pub version: String,
    pub seed: String,
    pub audit_full: bool,
    pub mandatory: Option<Mandatory>,
    pub full_review: Vec<FullReview>,
    pub cascade: Option<Cascade>,
    pub active_learning: Option<ActiveLearning>,
    pub sampling: Option<Sampling>,
    pub deferred: Option<Deferred>,
    pub languages: Languages,
    pub gold: Option<Gold>,
    /// Why this policy is left to the Python engine (a feature the port does not know).
    pub unsupported: Option<String>,
}

#[derive(Deserialize)]
pub struct Pool {
    pub name: String,
    /// Lower-cased; empty: the pool lists no languages.
    pub languages: Vec<String>,
    pub any_language: bool,
    pub skills: Vec<String>,
    /// "skill a, b" or "skill (none)", as pools.choose words it.
    pub skill_text: String,
}

#[derive(Deserialize)]
pub struct PolicySpec {
    pub version: String,
    pub policies: HashMap<String, Policy>,
    pub unknown_policy: Option<String>,
    /// Every pool, cheapest first (then by name), as pools._speakers orders them.
    pub pools: Vec<Pool>,
}

pub struct Claim {
    pub key: String,
    pub cap: i64,
    pub ttl: Option<i64>,
}

pub struct Decision {
    pub domain: String,
    pub route: &'static str,
    pub reasons: Vec<(String, String)>,
    pub policy_version: String,
    pub pool: Option<String>,
    pub reviewers: i64,
    pub adjudicator_pool: Option<String>,
    pub sla_deadline_ms: Option<i64>,
    pub blind: bool,
    pub rubric: Option<String>,
    pub audit: bool,
    pub claims: Vec<Claim>,
    pub stratum: String,
    pub gold: Option<String>,
    pub language: Option<String>,
    pub fallback: bool,
    pub uncertainty: Option<f64>,
}

/// The budget state decide() reads (policy.budget.BudgetView).
pub trait Budgets {
    fn used(&mut self, key: &str) -> Result<i64, String>;
    fn claimed(&mut self, key: &str, item_id: &str) -> Result<bool, String>;
}

pub enum Outcome {
    Decision(Box<Decision>),
    Unsupported(String),
}

struct Fired<'p> {
    rule: &'p str,
    detail: String,
    spec: &'p Spec,
    hold: bool,
    blind: bool,
    claims: Vec<Claim>,
    stratum: String,
    uncertainty: Option<f64>,
}

impl<'p> Fired<'p> {
    fn new(rule: &'p str, detail: String, spec: &'p Spec, hold: bool) -> Self {
        Fired {
            rule,
            detail,
            spec,
            hold,
            blind: false,
            claims: Vec::new(),
            stratum: String::new(),
            uncertainty: None,
        }
    }
}

/// selection.unit_hash: a uniform draw in [0, 1) keyed by (version, seed, rule).
pub fn unit_hash(version: &str, seed: &str, rule: &str, item_id: &str) -> f64 {
    let key = format!("{version}|{seed}|{rule}");
    let key = &key.as_bytes()[..key.len().min(64)];
    let digest = blake2b_simd::Params::new()
        .hash_length(8)
        .key(key)
        .hash(item_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(digest.as_bytes());
    u64::from_be_bytes(bytes) as f64 / 18_446_744_073_709_551_616.0
}

/// Python's `format(x, ".4g")` (finite x).
pub fn fmt_g4(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{x:.3e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if (-4..4).contains(&exp) {
        let decimals = usize::try_from(3 - exp).unwrap_or(0);
        strip(&format!("{x:.decimals$}"))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mantissa), exp.abs())
    }
}

/// Python's `round(x, 6)` for a float.
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(x)
}

/// Python's `a // b` for floats (floatobject.c), as window ids are computed.
fn py_floordiv(vx: f64, wx: f64) -> f64 {
    let m = vx % wx;
    let mut div = (vx - m) / wx;
    if m != 0.0 && (wx < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut floordiv = div.floor();
        if div - floordiv > 0.5 {
            floordiv += 1.0;
        }
        floordiv
    } else {
        (0.0f64).copysign(vx / wx)
    }
}

fn window_key(domain: &str, rule: &str, window_s: f64, timestamp_ms: i64) -> String {
    let window_id = py_floordiv(timestamp_ms as f64, window_s * 1000.0) as i64;
    format!("{domain}|{rule}|{}s|{window_id}", window_s as i64)
}

fn ttl(window_s: f64) -> i64 {
    (window_s * 2.0) as i64 + 86_400
}

pub fn decide(
    record: &Record,
    set: &PolicySpec,
    timestamp_ms: i64,
    budgets: &mut dyn Budgets,
) -> Result<Outcome, String> {
    let loaded = set.policies.get(&record.domain).or_else(|| {
        set.unknown_policy
            .as_ref()
            .and_then(|name| set.policies.get(name))
    });
    let Some(p) = loaded else {
        return Ok(Outcome::Decision(Box::new(Decision {
            domain: record.domain.clone(),
            route: "deadletter",
            reasons: vec![(
                "unknown_domain".into(),
                format!("no policy for domain '{}'", record.domain),
            )],
            policy_version: set.version.clone(),
            pool: None,
            reviewers: 0,
            adjudicator_pool: None,
            sla_deadline_ms: None,
            blind: false,
            rubric: None,
            audit: true,
            claims: Vec::new(),
            stratum: String::new(),
            gold: None,
            language: None,
            fallback: false,
            uncertainty: None,
        })));
    };
    if let Some(why) = &p.unsupported {
        return Ok(Outcome::Unsupported(why.clone()));
    }
    let Some(fired) = first_rule(record, p, timestamp_ms, budgets)? else {
        return Ok(Outcome::Decision(Box::new(Decision {
            domain: record.domain.clone(),
            route: "pass",
            reasons: vec![("pass".into(), "no review rule matched".into())],
            policy_version: p.version.clone(),
            pool: None,
            reviewers: 0,
            adjudicator_pool: None,
            sla_deadline_ms: None,
            blind: false,
            rubric: None,
            audit: p.audit_full,
            claims: Vec::new(),
            stratum: String::new(),
            gold: None,
            language: None,
            fallback: false,
            uncertainty: None,
        })));
    };
    let (pool, detail, fallback) =
        choose(record.language.as_deref(), fired.rule, fired.spec, p, set);
    let mut reasons = vec![(fired.rule.to_string(), fired.detail)];
    let mut route = if fired.hold {
        "hold"
    } else {
        "deliver_and_review"
    };
    if let Some(detail) = detail {
        reasons.push(("language".into(), detail));
    }
    if fallback {
        route = "hold";
    }
    Ok(Outcome::Decision(Box::new(Decision {
        domain: record.domain.clone(),
        route,
        reasons,
        policy_version: p.version.clone(),
        pool: Some(pool),
        reviewers: fired.spec.reviewers,
        adjudicator_pool: fired.spec.adjudicator_pool.clone(),
        sla_deadline_ms: Some(timestamp_ms + fired.spec.sla_ms),
        blind: fired.blind,
        rubric: fired.spec.rubric.clone(),
        audit: true,
        claims: fired.claims,
        stratum: fired.stratum,
        gold: gold_pick(p, &record.id),
        language: record.language.clone(),
        fallback,
        uncertainty: fired.uncertainty,
    })))
}

fn gold_pick(p: &Policy, item_id: &str) -> Option<String> {
    let gold = p.gold.as_ref()?;
    if gold.ids.is_empty() || unit_hash(&p.version, &p.seed, "gold", item_id) >= gold.rate {
        return None;
    }
    let draw = unit_hash(&p.version, &p.seed, "gold_pick", item_id);
    gold.ids
        .get((draw * gold.ids.len() as f64) as usize)
        .cloned()
}

fn first_rule<'p>(
    record: &Record,
    p: &'p Policy,
    timestamp_ms: i64,
    budgets: &mut dyn Budgets,
) -> Result<Option<Fired<'p>>, String> {
    if let Some(m) = &p.mandatory {
        return Ok(Some(Fired::new(
            "mandatory_review",
            m.detail.clone(),
            &m.spec,
            true,
        )));
    }
    for rule in &p.full_review {
        if let Some(fired) = full_review(rule, record, p, budgets)? {
            return Ok(Some(fired));
        }
    }
    if let Some(rule) = &p.cascade {
        if let Some(fired) = cascade(rule, record) {
            return Ok(Some(fired));
        }
    }
    if let Some(rule) = &p.active_learning {
        if let Some(fired) = active_learning(rule, record, p, timestamp_ms, budgets)? {
            return Ok(Some(fired));
        }
    }
    if let Some(rule) = &p.sampling {
        if let Some(fired) = sampling(rule, record, p, timestamp_ms, budgets)? {
            return Ok(Some(fired));
        }
    }
    if let Some(d) = &p.deferred {
        let draw = unit_hash(&p.version, &p.seed, "deferred_review", &record.id);
        if draw < d.rate {
            let detail = format!(
                "sampled for later review (draw {draw:.4} < rate {})",
                d.rate_repr
            );
            return Ok(Some(Fired::new(
                "deferred_review",
                detail,
                &d.spec,
                d.spec.hold,
            )));
        }
    }
    Ok(None)
}

fn selects(rule: &FullReview, record: &Record) -> bool {
    if let Some(model) = &record.model {
        if rule.models.iter().any(|m| m == model) {
            return true;
        }
    }
    !rule.metadata.is_empty() && rule.metadata.iter().all(|(k, v)| record.meta(k) == Some(v))
}

fn full_review<'p>(
    rule: &'p FullReview,
    record: &Record,
    p: &Policy,
    budgets: &mut dyn Budgets,
) -> Result<Option<Fired<'p>>, String> {
    if !selects(rule, record) {
        return Ok(None);
    }
    let by_model = record.model.as_ref().filter(|m| rule.models.contains(m));
    let mut detail = match by_model {
        Some(model) => format!("selected by model {model}"),
        None => format!("selected by {}", rule.tags_text),
    };
    let mut claims = Vec::new();
    if let Some(first) = rule.first {
        // selection.first_n_key: `record.model or "-"` (an empty model counts as none).
        let model = record
            .model
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("-");
        let key = format!("{}|{}|{model}", p.domain, rule.name);
        if budgets.claimed(&key, &record.id)? {
            detail.push_str(&format!("; one of the first {first}"));
        } else {
            let used = budgets.used(&key)?;
            if used >= first {
                return Ok(None);
            }
            detail.push_str(&format!("; record {} of the first {first}", used + 1));
            claims.push(Claim {
                key,
                cap: first,
                ttl: None,
            });
        }
    }
    let mut fired = Fired::new(&rule.name, detail, &rule.spec, rule.spec.hold);
    fired.claims = claims;
    Ok(Some(fired))
}

fn cascade<'p>(rule: &'p Cascade, record: &Record) -> Option<Fired<'p>> {
    let mut why: Vec<String> = Vec::new();
    if let Some(below) = rule.below {
        match record.confidence {
            None => {
                if rule.missing_review {
                    why.push("confidence missing".into());
                }
            }
            Some(c) if c < below => {
                why.push(format!("confidence {} < {}", fmt_g4(c), rule.below_repr));
            }
            Some(_) => {}
        }
    }
    let judge = record.judge.as_ref();
    if let (Some(threshold), Some(score)) = (rule.judge_score_below, judge.and_then(|j| j.score)) {
        if score < threshold {
            why.push(format!(
                "judge score {} < {}",
                fmt_g4(score),
                rule.judge_score_below_repr
            ));
        }
    }
    if let Some(grade) = judge.and_then(|j| j.grade.as_ref()) {
        if rule.judge_grades.contains(grade) {
            why.push(format!("judge grade {grade} in {}", rule.judge_grades_repr));
        }
    }
    if why.is_empty() {
        return None;
    }
    Some(Fired::new(
        "confidence_cascade",
        why.join("; "),
        &rule.spec,
        rule.spec.hold,
    ))
}

fn active_learning<'p>(
    rule: &'p ActiveLearning,
    record: &Record,
    p: &Policy,
    timestamp_ms: i64,
    budgets: &mut dyn Budgets,
) -> Result<Option<Fired<'p>>, String> {
    let (low, high) = (rule.low, rule.high);
    let Some(c) = record.confidence else {
        return Ok(None);
    };
    if !(low <= c && c <= high) {
        return Ok(None);
    }
    let uncertainty = match rule.boundary {
        None => (high - c) / (high - low),
        Some(b) => {
            let (a, z) = (b - low, high - b);
            let reach = if z > a { z } else { a };
            1.0 - (c - b).abs() / reach
        }
    };
    let key = window_key(&p.domain, "active_learning", rule.window, timestamp_ms);
    let cap = rule.count;
    let (claims, detail) = if budgets.claimed(&key, &record.id)? {
        let detail = format!(
            "confidence {} in band [{}, {}]; budget slot already held",
            fmt_g4(c),
            rule.low_repr,
            rule.high_repr
        );
        (Vec::new(), detail)
    } else {
        let used = budgets.used(&key)?;
        if used >= cap || uncertainty < used as f64 / cap as f64 {
            return Ok(None);
        }
        let detail = format!(
            "confidence {} in band [{}, {}] (uncertainty {uncertainty:.2}); budget {}/{cap} this window",
            fmt_g4(c),
            rule.low_repr,
            rule.high_repr,
            used + 1
        );
        (
            vec![Claim {
                key,
                cap,
                ttl: Some(ttl(rule.window)),
            }],
            detail,
        )
    };
    let mut fired = Fired::new("active_learning", detail, &rule.spec, false);
    fired.claims = claims;
    fired.uncertainty = Some(round6(uncertainty));
    Ok(Some(fired))
}

fn stratum_of(record: &Record, paths: &[String]) -> String {
    let values: Vec<String> = paths
        .iter()
        .map(|path| {
            let value: Option<&str> = match path.as_str() {
                "judge.grade" => record.judge.as_ref().and_then(|j| j.grade.as_deref()),
                "language" => record.language.as_deref(),
                "model" => record.model.as_deref(),
                "domain" => Some(record.domain.as_str()),
                other => record.meta(other.strip_prefix("metadata.").unwrap_or(other)),
            };
            format!("{path}={}", value.unwrap_or("-"))
        })
        .collect();
    values.join(",")
}

fn sampling<'p>(
    rule: &'p Sampling,
    record: &Record,
    p: &Policy,
    timestamp_ms: i64,
    budgets: &mut dyn Budgets,
) -> Result<Option<Fired<'p>>, String> {
    let draw = unit_hash(&p.version, &p.seed, "sampling", &record.id);
    if let Some(rate) = rule.rate {
        if draw >= rate {
            return Ok(None);
        }
        let detail = format!("sampled (draw {draw:.4} < rate {})", rule.rate_repr);
        let mut fired = Fired::new("sampling", detail, &rule.spec, false);
        fired.blind = rule.blind;
        return Ok(Some(fired));
    }
    let Some(quota) = &rule.quota else {
        return Err("sampling has neither rate nor quota".into());
    };
    if let Some(gate) = quota.gate {
        if draw >= gate {
            return Ok(None);
        }
    }
    let key = window_key(&p.domain, "sampling", quota.window, timestamp_ms);
    let ttl_s = ttl(quota.window);
    let mut keyed = vec![Claim {
        key: key.clone(),
        cap: quota.count,
        ttl: Some(ttl_s),
    }];
    let mut stratum = String::new();
    if !quota.stratify_by.is_empty() {
        stratum = stratum_of(record, &quota.stratify_by);
        keyed.push(Claim {
            key: format!("{key}|{stratum}"),
            cap: quota.stratum_cap,
            ttl: Some(ttl_s),
        });
    }
    let mut all_claimed = true;
    for c in &keyed {
        if !budgets.claimed(&c.key, &record.id)? {
            all_claimed = false;
            break;
        }
    }
    let claims = if all_claimed {
        Vec::new()
    } else {
        let mut room = true;
        for c in &keyed {
            if budgets.used(&c.key)? >= c.cap {
                room = false;
                break;
            }
        }
        if !room {
            return Ok(None);
        }
        keyed
    };
    let slot = budgets.used(&key)? + i64::from(!claims.is_empty());
    let mut detail = format!("quota sample {slot}/{} this window", quota.count);
    if !stratum.is_empty() {
        detail.push_str(&format!(", stratum {stratum}"));
    }
    let mut fired = Fired::new("sampling", detail, &rule.spec, false);
    fired.blind = rule.blind;
    fired.claims = claims;
    fired.stratum = stratum;
    Ok(Some(fired))
}

fn speaks(pool: &Pool, language: &str) -> bool {
    let lower = language.to_ascii_lowercase();
    let primary = lower.split('-').next().unwrap_or("");
    pool.any_language || pool.languages.iter().any(|l| *l == lower || l == primary)
}

fn serves(pool: &Pool, language: &str, policy: &Policy) -> bool {
    if pool.languages.is_empty() {
        return policy.languages.pools.is_empty();
    }
    speaks(pool, language)
}

/// pools.choose: (pool, the reason when not simply the rule's, fallback).
fn choose(
    language: Option<&str>,
    rule: &str,
    spec: &Spec,
    policy: &Policy,
    set: &PolicySpec,
) -> (String, Option<String>, bool) {
    let rule_pool = &spec.pool;
    let pool = |name: &str| set.pools.iter().find(|p| p.name == name);
    let home = pool(rule_pool);
    let (Some(language), Some(home)) = (language, home) else {
        return (rule_pool.clone(), None, false);
    };
    if serves(home, language, policy) {
        return (rule_pool.clone(), None, false);
    }
    let routes = &policy.languages.pools;
    let primary = language.split('-').next().unwrap_or("");
    let own = routes.get(language).or_else(|| routes.get(primary));
    let mut speakers: Vec<&Pool> = Vec::new();
    if let Some(own_pool) = own.and_then(|name| pool(name)) {
        speakers.push(own_pool);
    }
    speakers.extend(set.pools.iter().filter(|p| {
        Some(&p.name) != own && !p.languages.is_empty() && !p.any_language && speaks(p, language)
    }));
    let has_skills = |p: &Pool| home.skills.iter().all(|s| p.skills.contains(s));
    let both = speakers.iter().find(|p| has_skills(p));
    let skill = &home.skill_text;
    if let Some(both) = both {
        let detail = format!("'{language}' reviewed by {}, which has {skill}", both.name);
        return (both.name.clone(), Some(detail), false);
    }
    let need = format!("'{language}' and {skill}");
    if policy.languages.skill_first.iter().any(|r| r == rule) {
        let detail = format!("no pool has both {need}: skill first for {rule}, {rule_pool}");
        return (rule_pool.clone(), Some(detail), false);
    }
    if let Some(first) = speakers.first() {
        let detail = format!("no pool has both {need}: language first, {}", first.name);
        return (first.name.clone(), Some(detail), false);
    }
    match &policy.languages.fallback {
        None => {
            let detail = format!("no pool speaks '{language}' and no fallback: {rule_pool}");
            (rule_pool.clone(), Some(detail), false)
        }
        Some(fallback) => {
            let detail = format!("no pool speaks '{language}': fallback pool {fallback}");
            (fallback.clone(), Some(detail), true)
        }
    }
}
