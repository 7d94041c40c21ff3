//! The `corekv` command line. The server and tools arrive with their
//! issues; today it only reports its version.

fn main() {
    println!("corekv {}", env!("CARGO_PKG_VERSION"));
}
