//! End-to-end tests of the flashsale server through HTTP, each on its own port and data dir.
//! One test binary (rust-analyzer style): faster to link, one place for the helpers.

// A failed unwrap is a failed test, with the line to look at; that is what tests want.
#![allow(clippy::unwrap_used)]

mod support;

mod admin;
mod bad_input;
mod bench;
mod browser;
mod buying;
mod config;
mod crash;
mod layers;
mod lifecycle;
mod line;
mod line_log;
mod line_pow;
mod openapi;
mod pages;
mod scaled;
mod security;
