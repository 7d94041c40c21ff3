//! `corekv tune host`: host checks, applying safe fixes, unit files.
