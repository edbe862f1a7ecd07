//! The booking and intervention queue (RabbitMQ): the booking
//! application's events, consumed as `../docs/messages.md` says.

pub mod message;
