//! Versions of a key: dots, version vectors, the hybrid logical clock, and
//! sibling sets with their merge.
