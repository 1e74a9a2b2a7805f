//! The four phases, each a separate measurement with its own result, and what they share:
//! who the clients are and how fired events are matched with what the clients received.

pub mod fanout;
pub mod latency;
pub mod memory;
pub mod recheck;
pub mod throughput;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Ctx;
use crate::client::{Rec, Spec, Swarm};
use crate::trigger::Fired;

/// A `message:create` frame of the shape the bridge emits for the benchmark's rows, for when
/// no bridge event was captured (the fan-out phase run for the Node server alone).
pub const SYNTHETIC: &str = r#"42["message:create",{"data":{"id":1,"attributes":{"text":"fan-out 1","likes":1,"score":null,"meta":null,"flag":true,"when":null,"day":null,"big":null,"rich":null,"mood":"happy","displayTitle":null,"body":"A benchmark message: a short paragraph of text of about the size a chat message or a comment has, one hundred and fifty characters or so.","ratio":null,"at":null,"slug":null,"contact":null,"blocks":null,"createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:00.000Z","publishedAt":"2026-01-01T00:00:00.000Z","extraNote":null}},"meta":{}}]"#;

/// Tells a controlled server (Node baseline, write floor) to send the bridge's own event: the
/// frame a bridge client captured earlier in the run, or [`SYNTHETIC`] when there was none.
pub async fn set_payload(ctx: &Ctx, control: std::net::SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context;
    let frame = ctx
        .template
        .lock()
        .ok()
        .and_then(|t| t.clone())
        .unwrap_or_else(|| {
            println!(
                "    no bridge event was captured: sending a synthetic payload of the same shape"
            );
            SYNTHETIC.to_owned()
        });
    let arr: serde_json::Value = serde_json::from_str(frame.get(2..).unwrap_or(""))
        .context("captured event is not 42[...]")?;
    let event = arr[0].as_str().context("event name")?;
    crate::trigger::node_payload(control, event, &arr[1].to_string()).await
}

/// Role labels, in the order [`Spec::role`] indexes them.
pub const ROLES: [&str; 3] = ["Public", "Authenticated", "Editor"];

/// `n` clients spread over the three roles: no token (Public), alice or bob (Authenticated),
/// eddie (Editor).
pub fn three_roles(ctx: &Ctx, n: usize) -> Vec<Spec> {
    (0..n)
        .map(|i| match i % 3 {
            0 => Spec {
                role: 0,
                token: None,
            },
            1 => Spec {
                role: 1,
                token: Some(if (i / 3) % 2 == 0 {
                    ctx.alice.clone()
                } else {
                    ctx.bob.clone()
                }),
            },
            _ => Spec {
                role: 2,
                token: Some(ctx.eddie.clone()),
            },
        })
        .collect()
}

/// `n` clients without a token (the Public role).
pub fn public(n: usize) -> Vec<Spec> {
    (0..n)
        .map(|_| Spec {
            role: 0,
            token: None,
        })
        .collect()
}

/// Fired events matched with what the clients received.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Fired events × connected clients.
    pub expected: u64,
    /// Receipts of fired events.
    pub delivered: u64,
    /// Receipts read before the trigger's instant was taken (counted as 0 µs).
    pub early: u64,
    /// Latency of every receipt, µs.
    pub latencies: Vec<u64>,
    /// Latencies per role.
    pub per_role: Vec<Vec<u64>>,
    /// Per fired event: from firing until the last client had it, µs.
    pub completion: Vec<u64>,
    pub first_fire: u32,
    /// The last receipt of any fired event.
    pub last_delivery: u32,
}

impl Analysis {
    pub fn lost(&self) -> i64 {
        self.expected as i64 - self.delivered as i64
    }

    /// From the first firing to the last receipt, seconds.
    pub fn span_seconds(&self) -> f64 {
        self.last_delivery.saturating_sub(self.first_fire) as f64 / 1e6
    }
}

/// Matches receipts with fired events.
pub fn analyse(fired: &[Fired], recs: Vec<(usize, Vec<Rec>)>, clients: usize) -> Analysis {
    let index: HashMap<u32, (usize, u32)> = fired
        .iter()
        .enumerate()
        .map(|(i, f)| (f.id, (i, f.t)))
        .collect();
    let mut a = Analysis {
        expected: (fired.len() * clients) as u64,
        per_role: vec![Vec::new(); ROLES.len()],
        completion: vec![0; fired.len()],
        first_fire: fired.first().map_or(0, |f| f.t),
        ..Analysis::default()
    };
    let mut last_receipt = vec![0u32; fired.len()];
    for (role, v) in recs {
        for r in v {
            let Some(&(i, t_fire)) = index.get(&r.id) else {
                continue;
            };
            a.delivered += 1;
            let lat = if r.t >= t_fire {
                u64::from(r.t - t_fire)
            } else {
                a.early += 1;
                0
            };
            a.latencies.push(lat);
            if let Some(p) = a.per_role.get_mut(role) {
                p.push(lat);
            }
            last_receipt[i] = last_receipt[i].max(r.t);
            a.last_delivery = a.last_delivery.max(r.t);
        }
    }
    for (i, f) in fired.iter().enumerate() {
        a.completion[i] = u64::from(last_receipt[i].saturating_sub(f.t));
    }
    a
}

/// Waits until the clients together have received `expected` more events than `base`, or the
/// deadline passes; whether they did.
pub async fn wait_delivered(swarm: &Swarm, base: u64, expected: u64, deadline: Instant) -> bool {
    crate::proc::wait_until(deadline, Duration::from_millis(5), || {
        swarm.total_count() >= base + expected
    })
    .await
}

/// Formats a number with thousands separators.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}
