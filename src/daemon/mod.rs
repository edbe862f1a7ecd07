//! Long-running integration daemons (FTP documents, RabbitMQ queue,
//! Colissimo tracking, bank notifications, stock alerts, schedules).
//!
//! Not built yet: see the open issues.
