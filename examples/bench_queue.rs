//! The booking queue's benchmark driver (scripts/bench-queue runs it):
//!
//! - `floor <amqp-url> <queue> <n>`: the broker alone: publish `n`
//!   persistent messages (publisher confirms) to a durable queue while a
//!   consumer takes them (prefetch 1000) and acknowledges them in batches
//!   of 500 or every 20 ms, no database: messages/s from the first publish
//!   to the last acknowledgement;
//! - `sustained <amqp-url> <exchange> <sqlite-target> <n>`: publish `n`
//!   booking-application events as fast as the broker confirms them while
//!   `repaero daemon queue` (started by the script) consumes them into the
//!   target: messages/s from the first publish until the `n`th is
//!   committed (`_repaero_messages`, polled every 2 ms);
//! - `latency <amqp-url> <exchange> <sqlite-target> <rate> <seconds>`:
//!   publish at `rate` messages/s for `seconds`, and note when each
//!   message's commit becomes visible in the target (polled every 1 ms):
//!   p50 / p99 / max of publish → commit, in ms (the polling adds at most
//!   1 ms);
//! - `publish <amqp-url> <exchange> <n>`: publish `n` events (confirmed)
//!   while no consumer runs, to be drained afterwards;
//! - `drain <sqlite-target> <n>`: from now until `n` more messages are
//!   committed in the target (the script starts the daemon right after):
//!   the consumer's own rate over a full queue, publisher not competing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const REFS: [&str; 6] = [
    "HYD-2040", "MOT-1001", "CON-4001", "TRN-2001", "DIV-5001", "CON-4004",
];

/// The `i`th event of a realistic mix: appointments created (60 %),
/// rescheduled (15 %), cancelled (5 %), interventions completed with a
/// part or two (20 %).
fn event(i: u64, run: u64) -> (String, Vec<u8>) {
    let id = format!("{run:x}-{i:08x}-0000-4000-8000-000000000000");
    let appt = format!("RDV-B{run:x}-{:06}", i / 5);
    let t = |m: u64| {
        let base = chrono::DateTime::parse_from_rfc3339("2026-11-02T08:00:00+01:00").unwrap();
        (base + chrono::TimeDelta::minutes(m as i64)).to_rfc3339()
    };
    let booking = |kind: &str| {
        serde_json::json!({
            "message_id": id, "event_type": kind, "occurred_at": t(i),
            "appointment_id": appt, "client_email": "contact@aeroclub-exemple.fr",
            "technician_id": format!("TECH-0{}", 1 + i % 5), "aircraft_registration": "F-GKXA",
            "start": t(10_000 + i), "end": t(10_120 + i), "intervention_type": "Visite 50 h",
            "cancellation_reason": "",
        })
    };
    let v = match i % 20 {
        0..=11 => booking("appointment.created"),
        12..=14 => booking("appointment.rescheduled"),
        15 => booking("appointment.cancelled"),
        _ => serde_json::json!({
            "message_id": id, "event_type": "intervention.completed", "occurred_at": t(i),
            "intervention_id": format!("INT-B{run:x}-{i:08}"), "appointment_id": appt,
            "aircraft_registration": "F-GKXA", "technician_id": "TECH-01",
            "completed_at": t(i), "time_spent_minutes": 90, "intervention_type": "Visite 50 h",
            "parts_consumed": [{"reference": REFS[(i % 6) as usize], "quantity": 1}],
        }),
    };
    (
        v["event_type"].as_str().unwrap().to_string(),
        serde_json::to_vec(&v).unwrap(),
    )
}

fn props() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

async fn floor(url: &str, queue: &str, n: u64) -> Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let pubc = conn.create_channel().await?;
    let subc = conn.create_channel().await?;
    let q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    pubc.queue_declare(queue.into(), q, FieldTable::default())
        .await?;
    pubc.confirm_select(ConfirmSelectOptions::default()).await?;
    subc.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = subc
        .basic_consume(
            queue.into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let bodies: Vec<(String, Vec<u8>)> = (0..n).map(|i| event(i, 1)).collect();
    let t0 = Instant::now();
    let name = queue.to_string();
    let publisher = tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        for (_, body) in &bodies {
            pending.push_back(
                pubc.basic_publish(
                    "".into(),
                    name.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props(),
                )
                .await?,
            );
            while pending.len() > 2000 {
                pending.pop_front().unwrap().await?;
            }
        }
        for c in pending {
            c.await?;
        }
        anyhow::Ok(())
    });
    let mut got = 0u64;
    while got < n {
        let first = consumer.next().await.context("consumer ended")??;
        let mut last = first.delivery_tag;
        let mut batch = 1u64;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        while batch < 500 && got + batch < n {
            tokio::select! {
                d = consumer.next() => { let d = d.context("consumer ended")??; last = d.delivery_tag; batch += 1; }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        subc.basic_ack(last, BasicAckOptions { multiple: true })
            .await?;
        got += batch;
    }
    let secs = t0.elapsed().as_secs_f64();
    publisher.await??;
    let ch = conn.create_channel().await?;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    println!("floor {n} {secs:.3} {:.0}", n as f64 / secs);
    Ok(())
}

fn committed(db: &rusqlite::Connection) -> Result<u64> {
    Ok(
        db.query_row("SELECT count(*) FROM _repaero_messages", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

async fn sustained(url: &str, exchange: &str, target: &str, n: u64) -> Result<()> {
    let db = rusqlite::Connection::open(target)?;
    let base = committed(&db)?;
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let run = std::process::id() as u64;
    let bodies: Vec<(String, Vec<u8>)> = (0..n).map(|i| event(i, run)).collect();
    let ex = exchange.to_string();
    let t0 = Instant::now();
    let publisher = tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        for (key, body) in &bodies {
            pending.push_back(
                ch.basic_publish(
                    ex.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props(),
                )
                .await?,
            );
            while pending.len() > 2000 {
                pending.pop_front().unwrap().await?;
            }
        }
        for c in pending {
            c.await?;
        }
        anyhow::Ok(Instant::now())
    });
    loop {
        if committed(&db)? >= base + n {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("not committed within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let published = publisher.await??.duration_since(t0).as_secs_f64();
    println!(
        "sustained {n} {secs:.3} {:.0} published_in {published:.3}",
        n as f64 / secs
    );
    Ok(())
}

async fn latency(url: &str, exchange: &str, target: &str, rate: u64, seconds: u64) -> Result<()> {
    let db = rusqlite::Connection::open(target)?;
    let mut seen_rowid: i64 = db.query_row(
        "SELECT coalesce(max(rowid), 0) FROM _repaero_messages",
        [],
        |r| r.get(0),
    )?;
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let n = rate * seconds;
    let run = std::process::id() as u64 ^ 0xabc;
    let bodies: Vec<(String, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let (k, b) = event(i, run);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            (v["message_id"].as_str().unwrap().to_string(), k, b)
        })
        .collect();
    let ex = exchange.to_string();
    let start = Instant::now();
    let sent_at: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let sent = sent_at.clone();
    let publisher = tokio::spawn(async move {
        for (i, (id, key, body)) in bodies.iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            sent.lock().unwrap().insert(id.clone(), Instant::now());
            ch.basic_publish(
                ex.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props(),
            )
            .await?;
        }
        anyhow::Ok(())
    });
    let mut lat: Vec<f64> = Vec::with_capacity(n as usize);
    let mut stmt =
        db.prepare("SELECT rowid, message_id FROM _repaero_messages WHERE rowid > ?1")?;
    while (lat.len() as u64) < n {
        let now = Instant::now();
        let rows: Vec<(i64, String)> = stmt
            .query_map([seen_rowid], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        {
            let sent = sent_at.lock().unwrap();
            for (rowid, id) in rows {
                seen_rowid = seen_rowid.max(rowid);
                if let Some(t) = sent.get(&id) {
                    lat.push(now.duration_since(*t).as_secs_f64() * 1000.0);
                }
            }
        }
        if start.elapsed() > Duration::from_secs(seconds + 120) {
            bail!("only {} of {n} committed", lat.len());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    publisher.await??;
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "latency {rate} {n} p50 {:.1} p99 {:.1} max {:.1}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    Ok(())
}

async fn publish(url: &str, exchange: &str, n: u64) -> Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let run = std::process::id() as u64 ^ 0xd4a1;
    let t0 = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let (key, body) = event(i, run);
        pending.push_back(
            ch.basic_publish(
                exchange.into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props(),
            )
            .await?,
        );
        while pending.len() > 2000 {
            pending.pop_front().context("confirm")?.await?;
        }
    }
    for c in pending {
        c.await?;
    }
    println!("publish {n} {:.3}", t0.elapsed().as_secs_f64());
    Ok(())
}

fn drain(target: &str, n: u64) -> Result<()> {
    let db = rusqlite::Connection::open(target)?;
    let base = committed(&db)?;
    let t0 = Instant::now();
    while committed(&db)? < base + n {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("not committed within 600 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("drain {n} {secs:.3} {:.0}", n as f64 / secs);
    Ok(())
}

/// Delete the queues and exchanges named `<prefix>.*` the benchmark made.
async fn cleanup(url: &str, prefix: &str) -> Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    for q in ["q", "dlq", "floor"] {
        let _ = ch
            .queue_delete(
                format!("{prefix}.{q}").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    for e in ["booking", "dlx"] {
        let _ = ch
            .exchange_delete(
                format!("{prefix}.{e}").as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let num = |i: usize| -> Result<u64> {
        args.get(i)
            .context("missing argument")?
            .parse()
            .context("not a number")
    };
    match args.first().map(String::as_str) {
        Some("floor") => rt.block_on(floor(&args[1], &args[2], num(3)?)),
        Some("sustained") => rt.block_on(sustained(&args[1], &args[2], &args[3], num(4)?)),
        Some("latency") => rt.block_on(latency(&args[1], &args[2], &args[3], num(4)?, num(5)?)),
        Some("publish") => rt.block_on(publish(&args[1], &args[2], num(3)?)),
        Some("drain") => drain(&args[1], num(2)?),
        Some("cleanup") => rt.block_on(cleanup(&args[1], &args[2])),
        _ => bail!("usage: bench_queue floor|sustained|latency|publish|drain|cleanup …"),
    }
}
