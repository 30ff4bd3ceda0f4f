//! The publisher ports of the servers Herald replaces (docs/compat.md):
//! Meteor's controller port and Orbited's STOMP broker, each speaking its
//! own wire protocol, and both publishing through [`publish`] exactly as
//! `POST /api/publish` does.

pub(crate) mod meteor;
pub(crate) mod publish;
pub(crate) mod stomp;
