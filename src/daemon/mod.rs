//! Long-running integration daemons (FTP documents, RabbitMQ queue,
//! Colissimo tracking, bank notifications, stock alerts, schedules) and the
//! channels they talk through.
//!
//! Built so far: the notification channels stock alerts use, [`mail`]
//! (SMTP) and [`sms`] (an HTTP gateway). The daemons themselves are the
//! subject of later issues.

pub mod mail;
pub mod queue;
pub mod sms;
