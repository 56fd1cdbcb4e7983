//! Platform primitives: clocks, thread ids and signals, `/proc`, process exit.
//!
//! The thin wrappers over libc that the rest of blockcop builds on, each with its `unsafe` argued here, so that the
//! modules above them stay safe code. Together with the interposer ([`crate::capture::intercept`]) and the sampler's signal
//! handler ([`crate::capture::sampler`]), this is where blockcop's `unsafe` code is (the root denies it everywhere else).
#![allow(unsafe_code)]

pub(crate) mod clock;
pub(crate) mod exit;
pub(crate) mod thread;
