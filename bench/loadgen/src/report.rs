//! The results: a table for the terminal (figure, value, baseline, goal, verdict) and a JSON
//! document with every figure, the machine and the versions.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

/// One line of the table.
pub struct Row {
    pub phase: String,
    pub figure: String,
    pub value: String,
    pub baseline: String,
    pub goal: String,
    /// Goal met (`Some(true)`), missed (`Some(false)`), or no goal.
    pub met: Option<bool>,
}

/// Everything measured so far.
pub struct Report {
    json: Map<String, Value>,
    rows: Vec<Row>,
    errors: Vec<(String, String)>,
}

impl Report {
    pub fn new(machine_and_versions: Value, quick: bool) -> Report {
        let mut json = Map::new();
        json.insert("benchmark".into(), json!("strapi-io-bridge bench/run"));
        json.insert(
            "started_at_unix".into(),
            json!(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ),
        );
        json.insert("mode".into(), json!(if quick { "quick" } else { "full" }));
        if let Value::Object(m) = machine_and_versions {
            json.extend(m);
        }
        json.insert("phases".into(), json!({}));
        json.insert("phase_seconds".into(), json!({}));
        Report {
            json,
            rows: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Sets `phases.<phase>` in the JSON.
    pub fn set(&mut self, phase: &str, value: Value) {
        if let Some(Value::Object(p)) = self.json.get_mut("phases") {
            p.insert(phase.to_owned(), value);
        }
    }

    /// Adds a table row.
    pub fn row(
        &mut self,
        phase: &str,
        figure: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        goal: impl Into<String>,
        met: Option<bool>,
    ) {
        self.rows.push(Row {
            phase: phase.to_owned(),
            figure: figure.into(),
            value: value.into(),
            baseline: baseline.into(),
            goal: goal.into(),
            met,
        });
    }

    pub fn phase_seconds(&mut self, phase: &str, secs: f64) {
        if let Some(Value::Object(p)) = self.json.get_mut("phase_seconds") {
            p.insert(phase.to_owned(), json!((secs * 10.0).round() / 10.0));
        }
    }

    /// How busy the machine was (all cores, 0–1) in the half second before a phase.
    pub fn phase_busy(&mut self, phase: &str, busy: f64) {
        let map = self
            .json
            .entry("machine_busy_before_phase")
            .or_insert_with(|| json!({}));
        if let Value::Object(m) = map {
            m.insert(phase.to_owned(), json!((busy * 1000.0).round() / 1000.0));
        }
    }

    pub fn total_seconds(&mut self, secs: f64) {
        self.json
            .insert("runner_seconds".into(), json!((secs * 10.0).round() / 10.0));
    }

    pub fn phase_error(&mut self, phase: &str, error: &str) {
        self.errors.push((phase.to_owned(), error.to_owned()));
        self.row(
            phase,
            "PHASE FAILED",
            error.lines().next().unwrap_or(""),
            "",
            "",
            Some(false),
        );
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Prints the table.
    pub fn print(&self) {
        let headers = [
            "phase",
            "figure",
            "value",
            "baseline / reference",
            "goal",
            "",
        ];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.phase.clone(),
                    r.figure.clone(),
                    r.value.clone(),
                    r.baseline.clone(),
                    r.goal.clone(),
                    match r.met {
                        Some(true) => "met".into(),
                        Some(false) => "MISSED".into(),
                        None => String::new(),
                    },
                ]
            })
            .collect();
        let mut widths = headers.map(|h| h.chars().count());
        for c in &cells {
            for (i, s) in c.iter().enumerate() {
                widths[i] = widths[i].max(s.chars().count());
            }
        }
        let line = |c: &[String; 6]| {
            let mut s = String::new();
            for (i, cell) in c.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
                if i < 5 {
                    s.push_str(" | ");
                }
            }
            s.trim_end().to_owned()
        };
        println!("\n{}", "=".repeat(100));
        if let (Some(m), Some(v)) = (self.json.get("machine"), self.json.get("versions")) {
            println!(
                "machine: {} cores, {}, {} MB, kernel {}",
                m["cores"],
                m["cpu_model"].as_str().unwrap_or(""),
                m["memory_mb"],
                m["kernel"].as_str().unwrap_or("")
            );
            println!(
                "versions: {}; {}; node {}, socket.io {}; {}",
                v["bridge"].as_str().unwrap_or(""),
                v["postgresql"].as_str().unwrap_or(""),
                v["node"].as_str().unwrap_or(""),
                v["socket.io"].as_str().unwrap_or(""),
                v["rustc"].as_str().unwrap_or("")
            );
        }
        println!("{}", line(&headers.map(str::to_owned)));
        println!(
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-")
        );
        let mut last_phase = String::new();
        for c in &cells {
            if !last_phase.is_empty() && c[0] != last_phase {
                println!();
            }
            last_phase = c[0].clone();
            println!("{}", line(c));
        }
        if let Some(Value::Object(p)) = self.json.get("phase_seconds") {
            let parts: Vec<String> = p.iter().map(|(k, v)| format!("{k} {v} s")).collect();
            println!("\nphase durations: {}", parts.join(", "));
        }
        let goals: Vec<&Row> = self.rows.iter().filter(|r| r.met.is_some()).collect();
        let met = goals.iter().filter(|r| r.met == Some(true)).count();
        println!("goals met: {met} of {}", goals.len());
    }

    /// Writes the JSON file (with the table rows as `goals`).
    pub fn write(&mut self, path: &Path) -> Result<()> {
        let goals: Vec<Value> = self
            .rows
            .iter()
            .filter(|r| r.met.is_some())
            .map(|r| {
                json!({
                    "phase": r.phase, "figure": r.figure, "value": r.value,
                    "baseline": r.baseline, "goal": r.goal, "met": r.met,
                })
            })
            .collect();
        self.json.insert("goals".into(), Value::Array(goals));
        let table: Vec<Value> = self
            .rows
            .iter()
            .map(|r| json!([r.phase, r.figure, r.value, r.baseline, r.goal]))
            .collect();
        self.json.insert("table".into(), Value::Array(table));
        if !self.errors.is_empty() {
            self.json.insert(
                "errors".into(),
                Value::Object(
                    self.errors
                        .iter()
                        .map(|(p, e)| (p.clone(), json!(e)))
                        .collect(),
                ),
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&self.json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}
