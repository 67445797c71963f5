//! hitl_gateway_native._native: decode one record value and route it, in one call.
//!
//! `route(policies, value, max_bytes, max_id_length, timestamp_ms, budgets)` returns a tuple:
//! `(0, reason, detail)` for a dead letter, `(1, domain, route, reasons, policy_version, pool,
//! reviewers, adjudicator_pool, sla_deadline_ms, blind, rubric, audit, claims, stratum,
//! gold_id, language, fallback, uncertainty)` for a decision, or `(2, why)` where this port
//! does not reproduce the Python path (the caller runs `decode` and `decide` instead).

mod decode;
mod engine;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::decode::Decoded;
use crate::engine::{Budgets, Outcome, PolicySpec};

/// A policy set compiled once (from `hitl_gateway_native.compile_policies`'s JSON).
#[pyclass(frozen, module = "hitl_gateway_native._native")]
struct Policies {
    spec: PolicySpec,
}

#[pymethods]
impl Policies {
    #[new]
    fn new(spec_json: &[u8]) -> PyResult<Self> {
        let spec: PolicySpec = serde_json::from_slice(spec_json)
            .map_err(|e| PyValueError::new_err(format!("not a compiled policy set: {e}")))?;
        Ok(Policies { spec })
    }

    #[getter]
    fn version(&self) -> &str {
        &self.spec.version
    }
}

/// The caller's BudgetView (policy.budget), asked only when a budgeted rule is reached.
struct PyBudgets<'a, 'py> {
    view: &'a Bound<'py, PyAny>,
    error: Option<PyErr>,
}

impl Budgets for PyBudgets<'_, '_> {
    fn used(&mut self, key: &str) -> Result<i64, String> {
        let result = self
            .view
            .call_method1("used", (key,))
            .and_then(|v| v.extract::<i64>());
        result.map_err(|e| {
            self.error = Some(e);
            "budgets.used failed".to_string()
        })
    }

    fn claimed(&mut self, key: &str, item_id: &str) -> Result<bool, String> {
        let result = self
            .view
            .call_method1("claimed", (key, item_id))
            .and_then(|v| v.is_truthy());
        result.map_err(|e| {
            self.error = Some(e);
            "budgets.claimed failed".to_string()
        })
    }
}

fn any<'py, T: IntoPyObjectExt<'py>>(py: Python<'py>, value: T) -> PyResult<Bound<'py, PyAny>> {
    value.into_bound_py_any(py)
}

#[pyfunction]
fn route<'py>(
    py: Python<'py>,
    policies: &Policies,
    value: &Bound<'py, PyAny>,
    max_bytes: usize,
    max_id_length: usize,
    timestamp_ms: i64,
    budgets: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let bytes = if value.is_none() {
        None
    } else {
        Some(value.cast::<PyBytes>()?.as_bytes())
    };
    let record = match decode::decode(bytes, max_bytes, max_id_length) {
        Decoded::Record(record) => record,
        Decoded::Invalid(reason, detail) => {
            return PyTuple::new(py, [any(py, 0)?, any(py, reason)?, any(py, detail)?]);
        }
        Decoded::Unsupported(why) => return PyTuple::new(py, [any(py, 2)?, any(py, why)?]),
    };
    let mut view = PyBudgets {
        view: budgets,
        error: None,
    };
    let outcome = engine::decide(&record, &policies.spec, timestamp_ms, &mut view);
    let d = match outcome {
        Ok(Outcome::Decision(d)) => d,
        Ok(Outcome::Unsupported(why)) => return PyTuple::new(py, [any(py, 2)?, any(py, why)?]),
        Err(why) => {
            return Err(view
                .error
                .take()
                .unwrap_or_else(|| PyValueError::new_err(why)));
        }
    };
    let reasons = PyTuple::new(py, d.reasons.into_iter().collect::<Vec<_>>())?;
    let claims = PyTuple::new(
        py,
        d.claims
            .into_iter()
            .map(|c| (c.key, c.cap, c.ttl))
            .collect::<Vec<_>>(),
    )?;
    PyTuple::new(
        py,
        [
            any(py, 1)?,
            any(py, d.domain)?,
            any(py, d.route)?,
            reasons.into_any(),
            any(py, d.policy_version)?,
            any(py, d.pool)?,
            any(py, d.reviewers)?,
            any(py, d.adjudicator_pool)?,
            any(py, d.sla_deadline_ms)?,
            any(py, d.blind)?,
            any(py, d.rubric)?,
            any(py, d.audit)?,
            claims.into_any(),
            any(py, d.stratum)?,
            any(py, d.gold)?,
            any(py, d.language)?,
            any(py, d.fallback)?,
            any(py, d.uncertainty)?,
        ],
    )
}

/// The draw `selection.unit_hash` makes (exposed for the tests).
#[pyfunction]
fn unit_hash(version: &str, seed: &str, rule: &str, item_id: &str) -> f64 {
    engine::unit_hash(version, seed, rule, item_id)
}

/// Python's `format(x, ".4g")` as ported (exposed for the tests).
#[pyfunction]
fn format_g4(x: f64) -> String {
    engine::fmt_g4(x)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Policies>()?;
    m.add_function(wrap_pyfunction!(route, m)?)?;
    m.add_function(wrap_pyfunction!(unit_hash, m)?)?;
    m.add_function(wrap_pyfunction!(format_g4, m)?)?;
    Ok(())
}
