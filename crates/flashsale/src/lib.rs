//! The flashsale application: configuration and wiring, shared by the binary and the
//! end-to-end tests.

pub mod app;
pub mod config;
pub mod demo;
