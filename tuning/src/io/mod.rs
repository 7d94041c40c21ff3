//! `corekv tune io`: measure the disk, derive settings, store them.
//!
//! [`bench::run`] does the measuring (the only part touching the disk),
//! [`recommend`] turns figures into settings, [`props`] is the file format
//! `corekv serve` reads, [`report`] prints the table.

pub mod bench;
mod buf;
mod guard;
mod progress;
pub mod props;
pub mod recommend;
pub mod report;
mod ring;
pub mod stats;

pub(crate) use ring::probe_ring;
