//! The booking and intervention queue (RabbitMQ): the booking
//! application's events, consumed as `docs/messages.md` says.
//!
//! The feed declares (or, with `declare = false`, checks) its queue bound
//! to the `booking` exchange, with a dead-letter exchange and queue; takes
//! at most `prefetch` unacknowledged messages; gathers them into batches
//! (`batch_size` messages, or what came within `max_batch_latency_ms` of
//! the first) that are applied in one transaction ([`store`]); and
//! acknowledges a batch only once it is committed. A refused message is
//! recorded in `_dead_letters`, published to the dead-letter exchange with
//! its reason in the `x-repaero-reason` header (confirmed by the broker),
//! then acknowledged: consuming goes on. A crash anywhere leaves the
//! unacknowledged messages to be delivered again, which changes nothing
//! (`_repaero_messages`). Booked / moved / cancelled notifications are
//! recorded with the batch and sent after it, outside any transaction.

pub mod message;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Feed, FeedContext};
use crate::config::Config;
use crate::error::{Error, Result};
use store::{Incoming, Outcome, Rules};

/// `[daemons.queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// `amqp://user:${AMQP_PASSWORD}@host:5672/%2f` (`amqps://` for TLS).
    pub url: String,
    /// The booking application's exchange (topic, durable).
    #[serde(default = "QueueConfig::default_exchange")]
    pub exchange: String,
    /// This consumer's queue; several consumers may share it.
    #[serde(default = "QueueConfig::default_queue")]
    pub queue: String,
    /// Binding keys of the queue on the exchange (`#`: every event, the
    /// unknown ones included, which are then refused with their reason).
    #[serde(default = "QueueConfig::default_bindings")]
    pub bindings: Vec<String>,
    #[serde(default = "QueueConfig::default_dlx")]
    pub dead_letter_exchange: String,
    #[serde(default = "QueueConfig::default_dlq")]
    pub dead_letter_queue: String,
    /// Declare the exchange, the queues and their bindings (true), or only
    /// check that they exist (false: the broker's administrators own them).
    #[serde(default = "yes")]
    pub declare: bool,
    /// Unacknowledged messages the broker may hand over at once.
    #[serde(default = "QueueConfig::default_prefetch")]
    pub prefetch: u16,
    /// Messages applied in one transaction at most.
    #[serde(default = "QueueConfig::default_batch")]
    pub batch_size: usize,
    /// How long the first message of a batch waits for others, in ms.
    #[serde(default = "QueueConfig::default_latency")]
    pub max_batch_latency_ms: u64,
    /// The connection's name as the broker shows it.
    #[serde(default = "QueueConfig::default_connection_name")]
    pub connection_name: String,
    /// Hourly rate (€ excl. tax) of a technician not in `rates`.
    #[serde(default = "QueueConfig::default_rate")]
    pub default_rate: f64,
    /// Hourly rate per technician id (`TECH-03 = 82.0`).
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    /// Events that raise the booked / moved / cancelled notification.
    #[serde(default = "QueueConfig::default_notify")]
    pub notify: Vec<String>,
    /// Channels of the notifications: `email`, `sms` (default: those
    /// configured in `[alerts]`).
    pub channels: Option<Vec<String>>,
    /// SMS body template for notifications (default: `[alerts.sms] body`);
    /// `{appointment}`, `{event}`, `{start}`, `{end}`, `{technician}`,
    /// `{aircraft}`, `{client}`, `{text}`, `{to}`.
    pub sms_body: Option<String>,
    /// Seconds between checks of the queue's depth (heartbeat).
    #[serde(default = "QueueConfig::default_depth_every")]
    pub depth_every: u64,
}

fn yes() -> bool {
    true
}

impl QueueConfig {
    fn default_exchange() -> String {
        "booking".into()
    }
    fn default_queue() -> String {
        "repaero.booking".into()
    }
    fn default_bindings() -> Vec<String> {
        vec!["#".into()]
    }
    fn default_dlx() -> String {
        "repaero.booking.dead".into()
    }
    fn default_dlq() -> String {
        "repaero.booking.dead".into()
    }
    fn default_prefetch() -> u16 {
        1000
    }
    fn default_batch() -> usize {
        500
    }
    fn default_latency() -> u64 {
        20
    }
    fn default_connection_name() -> String {
        "repaero-queue".into()
    }
    fn default_rate() -> f64 {
        75.0
    }
    fn default_notify() -> Vec<String> {
        [
            "appointment.created",
            "appointment.rescheduled",
            "appointment.cancelled",
        ]
        .map(String::from)
        .to_vec()
    }
    fn default_depth_every() -> u64 {
        5
    }

    /// `[daemons.queue]` of the configuration, checked.
    pub fn from_config(cfg: &Config) -> Result<QueueConfig> {
        let table = super::feed_table(cfg, "queue");
        if table.is_empty() {
            return Err(Error::config(
                "[daemons.queue]: not configured (url = \"amqp://…\" at least)",
            ));
        }
        let q: QueueConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::config(format!("[daemons.queue]: {}", e.message()))
                })?;
        let bad = |m: String| Err(Error::config(format!("[daemons.queue]: {m}")));
        if !(q.url.starts_with("amqp://") || q.url.starts_with("amqps://")) {
            return bad(format!(
                "url {:?}: amqp://… or amqps://…",
                crate::config::redact_url(&q.url)
            ));
        }
        if q.batch_size == 0 || q.prefetch == 0 || (q.prefetch as usize) < q.batch_size {
            return bad(format!(
                "batch_size ({}) must be at least 1 and at most prefetch ({})",
                q.batch_size, q.prefetch
            ));
        }
        if q.max_batch_latency_ms == 0 || q.max_batch_latency_ms > 60_000 {
            return bad("max_batch_latency_ms: between 1 and 60000".into());
        }
        for (t, r) in q
            .rates
            .iter()
            .chain([(&"default_rate".to_string(), &q.default_rate)])
        {
            if !(r.is_finite() && *r >= 0.0) {
                return bad(format!("rate of {t}: {r} is not an amount ≥ 0"));
            }
        }
        for n in &q.notify {
            if !QueueConfig::default_notify().contains(n) {
                return bad(format!(
                    "notify: {n:?}; the notified events are appointment.created, appointment.rescheduled, appointment.cancelled"
                ));
            }
        }
        for c in q.channels.iter().flatten() {
            match c.as_str() {
                "email" if cfg.alerts.email.is_none() => {
                    return bad("channels: email needs [alerts.email]".into());
                }
                "sms" if cfg.alerts.sms.is_none() => {
                    return bad("channels: sms needs [alerts.sms]".into());
                }
                "email" | "sms" => {}
                other => return bad(format!("channels: {other:?}; email or sms")),
            }
        }
        if q.queue.is_empty() || q.dead_letter_exchange.is_empty() || q.dead_letter_queue.is_empty()
        {
            return bad("queue, dead_letter_exchange and dead_letter_queue must be named".into());
        }
        Ok(q)
    }

    /// What the store applies.
    pub fn rules(&self, cfg: &Config) -> Rules {
        let c = |r: f64| (r * 100.0).round() as i64;
        Rules {
            rates: self.rates.iter().map(|(k, v)| (k.clone(), c(*v))).collect(),
            default_rate: c(self.default_rate),
            notify: self.notify.clone(),
            channels: self.channels.clone().unwrap_or_else(|| {
                let mut v = Vec::new();
                if cfg.alerts.email.is_some() {
                    v.push("email".to_string());
                }
                if cfg.alerts.sms.is_some() {
                    v.push("sms".to_string());
                }
                v
            }),
        }
    }
}

fn amqp_err(what: &str, url: &str) -> impl Fn(lapin::Error) -> Error {
    let label = format!("AMQP {} ({what})", crate::config::redact_url(url));
    move |e| Error::runtime(format!("{label}: {e}"))
}

/// Connect within 15 s.
pub async fn connect(q: &QueueConfig) -> Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(q.connection_name.clone()));
    match tokio::time::timeout(Duration::from_secs(15), Connection::connect(&q.url, props)).await {
        Ok(c) => c.map_err(amqp_err("connect", &q.url)),
        Err(_) => Err(Error::runtime(format!(
            "AMQP {}: no connection within 15 s",
            crate::config::redact_url(&q.url)
        ))),
    }
}

/// Declare (or check) the exchange, the queue, the dead-letter exchange and
/// queue, and the bindings.
pub async fn topology(ch: &Channel, q: &QueueConfig) -> Result<u32> {
    let err = amqp_err("declaring the topology", &q.url);
    let passive = !q.declare;
    let ex = ExchangeDeclareOptions {
        passive,
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        q.exchange.as_str().into(),
        ExchangeKind::Topic,
        ex,
        FieldTable::default(),
    )
    .await
    .map_err(&err)?;
    ch.exchange_declare(
        q.dead_letter_exchange.as_str().into(),
        ExchangeKind::Fanout,
        ex,
        FieldTable::default(),
    )
    .await
    .map_err(&err)?;
    let qo = QueueDeclareOptions {
        passive,
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(
        q.dead_letter_queue.as_str().into(),
        qo,
        FieldTable::default(),
    )
    .await
    .map_err(&err)?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(q.dead_letter_exchange.as_str().into()),
    );
    let main = ch
        .queue_declare(
            q.queue.as_str().into(),
            qo,
            if passive { FieldTable::default() } else { args },
        )
        .await
        .map_err(&err)?;
    if q.declare {
        ch.queue_bind(
            q.dead_letter_queue.as_str().into(),
            q.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(&err)?;
        for key in &q.bindings {
            ch.queue_bind(
                q.queue.as_str().into(),
                q.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(&err)?;
        }
    }
    Ok(main.message_count())
}

/// The queue feed.
pub struct QueueFeed {
    q: QueueConfig,
    rules: Rules,
}

impl QueueFeed {
    pub fn new(cfg: &Config) -> Result<QueueFeed> {
        let q = QueueConfig::from_config(cfg)?;
        let rules = q.rules(cfg);
        Ok(QueueFeed { q, rules })
    }
}

/// The counts of outcomes since the feed started.
#[derive(Debug, Default, Clone, Serialize)]
struct Tally {
    applied: u64,
    redelivery: u64,
    superseded: u64,
    refused: u64,
    batches: u64,
}

impl Feed for QueueFeed {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.consume(ctx).await })
    }
}

impl QueueFeed {
    async fn consume(&self, ctx: &FeedContext) -> Result<()> {
        let q = &self.q;
        ctx.db.call(store::prepare).await?;
        let conn = connect(q).await?;
        let err = |what: &'static str| amqp_err(what, &q.url);
        let ch = conn.create_channel().await.map_err(err("channel"))?;
        let depth = topology(&ch, q).await?;
        ch.basic_qos(q.prefetch, BasicQosOptions::default())
            .await
            .map_err(err("prefetch"))?;
        let dead_ch = conn.create_channel().await.map_err(err("channel"))?;
        dead_ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err("publisher confirms"))?;
        let tag = format!("repaero-{}-{}", std::process::id(), rand_suffix());
        let mut consumer = ch
            .basic_consume(
                q.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err("consume"))?;
        tracing::info!(
            feed = "queue",
            broker = %crate::config::redact_url(&q.url),
            queue = %q.queue,
            depth,
            "consuming"
        );
        ctx.detail("queue", q.queue.clone().into());
        ctx.detail("queue_depth", depth.into());

        // notifications go out beside the consumption, never inside a batch
        let wake = Arc::new(tokio::sync::Notify::new());
        let sender = if self.rules.channels.is_empty() {
            None
        } else {
            Some(tokio::spawn(send_notices(
                ctx.db.clone(),
                ctx.cfg.clone(),
                q.clone(),
                wake.clone(),
            )))
        };

        let mut tally = Tally::default();
        let depth_every = Duration::from_secs(q.depth_every.max(1));
        let mut next_depth = Instant::now() + depth_every;
        let latency = Duration::from_millis(q.max_batch_latency_ms);
        let result: Result<()> = async {
            loop {
                if ctx.stopping() {
                    return Ok(());
                }
                if Instant::now() >= next_depth {
                    next_depth = Instant::now() + depth_every;
                    self.report_depth(ctx, &ch, &tally).await;
                }
                let first = tokio::select! {
                    d = consumer.next() => d,
                    _ = ctx.stopped() => return Ok(()),
                    _ = tokio::time::sleep_until(next_depth.into()) => continue,
                };
                let mut batch = vec![delivery(first)?];
                let deadline = tokio::time::Instant::now() + latency;
                while batch.len() < q.batch_size {
                    tokio::select! {
                        d = consumer.next() => batch.push(delivery(d)?),
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
                self.apply(ctx, &ch, &dead_ch, batch, &mut tally).await?;
                wake.notify_one();
            }
        }
        .await;
        if let Some(s) = sender {
            wake.notify_one();
            s.abort();
        }
        if result.is_ok() {
            self.report_depth(ctx, &ch, &tally).await;
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            let _ = conn.close(200, "repaero stopping".into()).await;
        }
        tracing::info!(feed = "queue", ?tally, "consumer ended");
        result
    }

    async fn report_depth(&self, ctx: &FeedContext, ch: &Channel, tally: &Tally) {
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if let Ok(qd) = ch
            .queue_declare(self.q.queue.as_str().into(), opts, FieldTable::default())
            .await
        {
            ctx.detail("queue_depth", qd.message_count().into());
            ctx.detail("consumers", qd.consumer_count().into());
        }
        if let Ok((dead, pending)) = ctx.db.call(|sink| store::counts(sink.conn()?)).await {
            ctx.detail("dead_letters", dead.into());
            ctx.detail("notifications_pending", pending.into());
        }
        ctx.detail("outcomes", serde_json::to_value(tally).unwrap_or_default());
    }

    /// Apply a batch, commit it, dead-letter its refused messages, then
    /// acknowledge it.
    async fn apply(
        &self,
        ctx: &FeedContext,
        ch: &Channel,
        dead_ch: &Channel,
        batch: Vec<lapin::message::Delivery>,
        tally: &mut Tally,
    ) -> Result<()> {
        let last_tag = batch.last().map(|d| d.delivery_tag).unwrap_or(0);
        let items: Vec<Incoming> = batch
            .into_iter()
            .map(|d| Incoming::new(d.routing_key.as_str(), d.data))
            .collect();
        let cfg = ctx.cfg.clone();
        let rules = self.rules.clone();
        let (result, items) = ctx
            .db
            .call(move |sink| {
                let r = store::apply_batch(sink, &cfg, &rules, &items)?;
                Ok((r, items))
            })
            .await?;
        // the refused ones to the dead-letter exchange, confirmed, before
        // the batch is acknowledged
        let mut confirms = Vec::new();
        for (item, outcome) in items.iter().zip(&result.outcomes) {
            let Outcome::Refused(r) = outcome else {
                continue;
            };
            tracing::warn!(
                feed = "queue",
                routing_key = %item.routing_key,
                "refused: {r}"
            );
            let mut headers = FieldTable::default();
            headers.insert(
                "x-repaero-reason".into(),
                AMQPValue::LongString(r.reason.into()),
            );
            let detail: String = r.detail.chars().take(2000).collect();
            headers.insert(
                "x-repaero-detail".into(),
                AMQPValue::LongString(detail.into()),
            );
            headers.insert(
                "x-repaero-queue".into(),
                AMQPValue::LongString(self.q.queue.as_str().into()),
            );
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers);
            let c = dead_ch
                .basic_publish(
                    self.q.dead_letter_exchange.as_str().into(),
                    ShortString::from(item.routing_key.as_str()),
                    BasicPublishOptions::default(),
                    &item.body,
                    props,
                )
                .await
                .map_err(amqp_err("dead-lettering", &self.q.url))?;
            confirms.push(c);
        }
        for c in confirms {
            let ok = c
                .await
                .map_err(amqp_err("dead-letter confirm", &self.q.url))?;
            if !ok.is_ack() {
                return Err(Error::runtime(
                    "the broker refused a dead letter: the batch is left unacknowledged (delivered again)",
                ));
            }
        }
        ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
            .map_err(amqp_err("acknowledging", &self.q.url))?;
        let mut done = 0;
        let mut refused = 0;
        for o in &result.outcomes {
            match o {
                Outcome::Applied => tally.applied += 1,
                Outcome::Redelivery => tally.redelivery += 1,
                Outcome::Superseded => tally.superseded += 1,
                Outcome::Refused(_) => {
                    tally.refused += 1;
                    refused += 1;
                    continue;
                }
            }
            done += 1;
        }
        tally.batches += 1;
        for u in &result.unknown_parts {
            tracing::warn!(
                feed = "queue",
                "part unknown to the stock, consumption recorded in billable_items: {u}"
            );
        }
        for a in &result.alerts_raised {
            tracing::warn!(feed = "queue", "stock alert raised: {a}");
        }
        ctx.progress(done, refused);
        tracing::debug!(
            feed = "queue",
            messages = result.outcomes.len(),
            "batch committed and acknowledged"
        );
        Ok(())
    }
}

fn delivery(
    d: Option<std::result::Result<lapin::message::Delivery, lapin::Error>>,
) -> Result<lapin::message::Delivery> {
    match d {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(Error::runtime(format!(
            "AMQP: the consumer lost its channel: {e}"
        ))),
        None => Err(Error::runtime(
            "AMQP: the broker cancelled the consumer (queue deleted?)",
        )),
    }
}

fn rand_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{n:08x}")
}

/// Send the recorded notifications, each within `alerts.send_timeout`,
/// woken after each batch and every 10 s (a failed send is tried again once
/// its claim lapses).
async fn send_notices(
    db: super::Db,
    cfg: Arc<Config>,
    q: QueueConfig,
    wake: Arc<tokio::sync::Notify>,
) {
    let bound = cfg.alerts.send_bound();
    let lease = (bound.as_millis() as i64) * 2 + 10_000;
    loop {
        let claimed = db
            .call(move |sink| store::claim_notices(sink, 100, lease))
            .await;
        let notices = match claimed {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(feed = "queue", "notifications not read: {e}");
                Vec::new()
            }
        };
        let busy = !notices.is_empty();
        for n in notices {
            let m = crate::notify::Message {
                subject: n.subject.clone(),
                body: n.body.clone(),
                values: n.fields.clone(),
            };
            let sending = async {
                match (n.channel.as_str(), &cfg.alerts.email, &cfg.alerts.sms) {
                    ("email", Some(mail), _) => {
                        crate::notify::mail::send(mail, &m.subject, &m.body, bound).await
                    }
                    ("sms", _, Some(sms)) => {
                        let mut sms = sms.clone();
                        if let Some(b) = &q.sms_body {
                            sms.body = b.clone();
                        }
                        crate::notify::sms::send(&sms, &m, bound).await
                    }
                    (other, _, _) => Err(Error::config(format!(
                        "notification channel {other} is not configured"
                    ))),
                }
            };
            let error = match tokio::time::timeout(bound, sending).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "no answer within {} s (alerts.send_timeout)",
                    bound.as_secs()
                )),
            };
            if let Some(e) = &error {
                tracing::warn!(feed = "queue", channel = %n.channel, "notification of {} not sent: {e}", n.message_id);
            }
            let stamped = db
                .call(move |sink| store::stamp_notice(sink, &n, error.as_deref()))
                .await;
            if let Err(e) = stamped {
                tracing::warn!(feed = "queue", "notification not stamped: {e}");
            }
        }
        if !busy {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
    }
}

/// What `repaero queue replay` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replayed {
    pub file: String,
    pub published: u64,
    /// Blank lines skipped.
    pub blank: u64,
    pub seconds: f64,
}

/// Publish every non-blank line of `path` as one message to the booking
/// exchange (routing key: its `event_type` when it has one, else
/// `unreadable`), persistent, with publisher confirms; the topology is
/// declared first so that nothing published is dropped for want of a queue.
pub async fn replay(cfg: &Config, path: &std::path::Path) -> Result<Replayed> {
    use tokio::io::AsyncBufReadExt;
    let q = QueueConfig::from_config(cfg)?;
    let t0 = Instant::now();
    let conn = connect(&q).await?;
    let err = |what: &'static str| amqp_err(what, &q.url);
    let ch = conn.create_channel().await.map_err(err("channel"))?;
    topology(&ch, &q).await?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(err("publisher confirms"))?;
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
    let mut lines = tokio::io::BufReader::new(f);
    let mut out = Replayed {
        file: path.display().to_string(),
        ..Default::default()
    };
    let mut pending = std::collections::VecDeque::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = lines
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            out.blank += 1;
            continue;
        }
        let v: Option<serde_json::Value> = serde_json::from_slice(&buf).ok();
        let key = v
            .as_ref()
            .and_then(|v| v.get("event_type")?.as_str().map(str::to_string))
            .filter(|k| !k.is_empty() && k.len() < 200)
            .unwrap_or_else(|| "unreadable".into());
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(id) = v
            .as_ref()
            .and_then(|v| v.get("message_id")?.as_str().map(str::to_string))
            .filter(|k| k.len() < 200)
        {
            props = props.with_message_id(id.into());
        }
        let c = ch
            .basic_publish(
                q.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                &buf,
                props,
            )
            .await
            .map_err(err("publish"))?;
        pending.push_back(c);
        out.published += 1;
        // a window of confirms in flight
        while pending.len() > 2000 {
            if let Some(c) = pending.pop_front() {
                confirmed(c.await, &q.url)?;
            }
        }
    }
    for c in pending {
        confirmed(c.await, &q.url)?;
    }
    let _ = conn.close(200, "replayed".into()).await;
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

fn confirmed(c: std::result::Result<lapin::Confirmation, lapin::Error>, url: &str) -> Result<()> {
    let c = c.map_err(amqp_err("publish confirm", url))?;
    if c.is_nack() {
        return Err(Error::runtime(format!(
            "AMQP {}: the broker refused a message (nack)",
            crate::config::redact_url(url)
        )));
    }
    Ok(())
}
