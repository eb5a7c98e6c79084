//! Figures, their targets, and the two outputs: one line per scenario and a JSON document.

use serde_json::{Value, json};

use crate::Params;
use orgmesh_tests::benchstats::spread;

/// How a figure compares with its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("≤{} {unit}", fmt(t)),
            Target::AtLeast(t) => format!("≥{} {unit}", fmt(t)),
        }
    }
}

/// One measured value of one run.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) target: Option<Target>,
}

impl Figure {
    /// A figure without a target (context for the others).
    pub(crate) fn info(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self { name: name.into(), value, unit, target: None }
    }

    /// A figure with a target.
    pub(crate) fn target(name: impl Into<String>, value: f64, unit: &'static str, target: Target) -> Self {
        Self { name: name.into(), value, unit, target: Some(target) }
    }
}

#[derive(Debug)]
struct Series {
    name: String,
    unit: &'static str,
    target: Option<Target>,
    values: Vec<f64>,
}

#[derive(Debug)]
struct Scenario {
    name: String,
    series: Vec<Series>,
    failures: Vec<String>,
}

/// Every run of every scenario.
#[derive(Debug)]
pub(crate) struct Report {
    runs: usize,
    conditions: Value,
    scenarios: Vec<Scenario>,
}

/// A number with as many decimals as its size needs.
pub(crate) fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    pub(crate) fn new(runs: usize, params: &Params) -> Self {
        let conditions = json!({
            "runs": runs,
            "quick": params.quick,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "started_unix_s": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        });
        Self { runs, conditions, scenarios: Vec::new() }
    }

    fn scenario(&mut self, name: &str) -> &mut Scenario {
        if let Some(i) = self.scenarios.iter().position(|s| s.name == name) {
            return &mut self.scenarios[i];
        }
        self.scenarios.push(Scenario { name: name.into(), series: Vec::new(), failures: Vec::new() });
        let last = self.scenarios.len() - 1;
        &mut self.scenarios[last]
    }

    pub(crate) fn add(&mut self, scenario: &str, figures: Vec<Figure>) {
        let s = self.scenario(scenario);
        for f in figures {
            match s.series.iter_mut().find(|x| x.name == f.name) {
                Some(x) => x.values.push(f.value),
                None => s.series.push(Series {
                    name: f.name,
                    unit: f.unit,
                    target: f.target,
                    values: vec![f.value],
                }),
            }
        }
    }

    pub(crate) fn fail(&mut self, scenario: &str, why: String) {
        self.scenario(scenario).failures.push(why);
    }

    /// `scenario: name=median unit [min–max] (target ≤x: met) ...`
    pub(crate) fn line(&mut self, scenario: &str) -> String {
        let runs = self.runs;
        let s = self.scenario(scenario);
        let mut out = format!("{scenario}:");
        for x in &s.series {
            let Some(sp) = spread(&x.values) else { continue };
            out.push_str(&format!(" {}={} {}", x.name, fmt(sp.median), x.unit));
            if x.values.len() > 1 {
                out.push_str(&format!(" [{}–{}]", fmt(sp.min), fmt(sp.max)));
            }
            if let Some(t) = x.target {
                let verdict = if t.met(sp.median) { "met" } else { "MISSED" };
                out.push_str(&format!(" (target {}: {verdict})", t.describe(x.unit)));
            }
            out.push(';');
        }
        if let Some(n) = s.series.first().map(|x| x.values.len()) {
            out.push_str(&format!(" runs={n}/{runs}"));
        }
        for f in &s.failures {
            out.push_str(&format!(" FAILED {f};"));
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        let scenarios: serde_json::Map<String, Value> = self
            .scenarios
            .iter()
            .map(|s| {
                let figures: serde_json::Map<String, Value> = s
                    .series
                    .iter()
                    .filter_map(|x| {
                        let sp = spread(&x.values)?;
                        let target = x.target.map(|t| match t {
                            Target::AtMost(v) => json!({"at_most": v}),
                            Target::AtLeast(v) => json!({"at_least": v}),
                        });
                        Some((
                            x.name.clone(),
                            json!({
                                "unit": x.unit,
                                "median": sp.median,
                                "min": sp.min,
                                "max": sp.max,
                                "runs": x.values,
                                "target": target,
                                "met": x.target.map(|t| t.met(sp.median)),
                            }),
                        ))
                    })
                    .collect();
                (s.name.clone(), json!({"figures": figures, "failures": s.failures}))
            })
            .collect();
        json!({"conditions": self.conditions, "scenarios": scenarios})
    }
}
