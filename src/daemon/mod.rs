//! Long-running integration daemons: the booking and intervention queue
//! ([`queue`], RabbitMQ), and, to come, the manufacturers' FTP documents,
//! Colissimo tracking, bank notifications and the scheduler. Each feed is a
//! file; what they send to people goes through `notify`.

pub mod queue;
