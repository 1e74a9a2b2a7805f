//! Percentiles and the shapes the phases report them in.

use serde_json::{Value, json};

/// Nearest-rank percentile of sorted values; `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90, p99, p99.9 and max of microsecond samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dist {
    /// Number of samples.
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(mut samples_us: Vec<u64>) -> Dist {
        samples_us.sort_unstable();
        let ms = |p: f64| percentile(&samples_us, p).map_or(f64::NAN, |v| v as f64 / 1000.0);
        Dist {
            n: samples_us.len(),
            p50: ms(50.0),
            p90: ms(90.0),
            p99: ms(99.0),
            p999: ms(99.9),
            max: samples_us.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "samples": self.n,
            "p50_ms": round3(self.p50),
            "p90_ms": round3(self.p90),
            "p99_ms": round3(self.p99),
            "p999_ms": round3(self.p999),
            "max_ms": round3(self.max),
        })
    }
}

/// Three decimals, for JSON that people read.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
