//! # corekv-tuning — fitting corekv to its disk and host
//!
//! Two tools behind `corekv tune`:
//!
//! - [`io`]: measures the data directory's disk with io_uring and O_DIRECT
//!   (sequential write and read bandwidth, random 4 KiB read IOPS and
//!   latency at several queue depths, fdatasync latency), derives settings
//!   from the figures ([`io::recommend`]) and stores both in an *io
//!   properties* TOML file that `corekv serve` reads ([`io::props`]).
//! - [`host`]: checks kernel and process settings that matter for a
//!   thread-per-core io_uring server (CPU governor, transparent huge pages,
//!   sysctls, rlimits, clocksource, NIC interrupt placement, io_uring
//!   availability), applies the safe ones on request, and writes a systemd
//!   unit and a sysctl.d file.
//!
//! Design rule: everything that interprets `/proc`, `/sys` or measurements
//! is a pure function over strings and numbers, tested on fixtures; reading
//! and writing the system happens in a few thin edge functions
//! ([`host::probe`], [`host::apply`], [`io::bench`]).
//!
//! Nothing here panics on bad input: every failure is an [`Error`] naming
//! the file or setting involved.

pub mod error;
pub mod host;
pub mod io;

pub use error::{Error, Result};
